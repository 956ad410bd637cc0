"""`python -m app.ops.estimate`: the arithmetic on hand-worked cases, the CLI end to end, bad input.

Hand calculations use round test prices (not prices.json) so that they stay true when prices
change: S3 $0.025/GB-month, PUT $0.005/1000, GET $0.0004/1000; G5 $1/h real-time and async;
OpenAI $0.25 in / $2 out per 1M tokens. A month is 730 h, so L = 730/24 = 30.41667 days.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from app.ops import estimate
from app.ops.estimate import (
    BucketInputs,
    CostInputs,
    InstancePrices,
    ModelPrices,
    Price,
    S3Prices,
    main,
)

pytestmark = pytest.mark.unit

L = 730 / 24  # days in a billing month
GIB = 2**30


def price(usd: float) -> Price:
    return Price(usd=usd, source="https://example.test/prices", found="2026-11-21", confidence="confirmed")


S3 = S3Prices(storage_per_gb_month=price(0.025), put_per_1000=price(0.005), get_per_1000=price(0.0004))
G5 = InstancePrices(realtime_per_hour=price(1.0), async_per_hour=price(1.0))
MINI = ModelPrices(input_per_1m=price(0.25), output_per_1m=price(2.0))


# The bucket ----------------------------------------------------------------------------------------


def test_steady_state_is_daily_intake_times_retention() -> None:
    # 1000 users x 2 uploads/day x 200 kB = 400,000,000 B = 0.4 GB a day; x 30 days = 12 GB.
    inputs = BucketInputs(users=1000, uploads_per_user_per_day=2, avg_image_kb=200, retention_days=30)
    steady = estimate.steady_state(inputs, 1000, S3)

    assert steady.intake_gb_per_day == pytest.approx(0.4)
    assert steady.stored_gb == pytest.approx(12.0)
    # Storage: S3 bills binary GB: 12e9 B / 2^30 = 11.17587 GiB x $0.025 = $0.279397 a month.
    assert steady.storage_usd_per_month == pytest.approx(12e9 / GIB * 0.025)
    assert steady.storage_usd_per_month == pytest.approx(0.279397, abs=1e-6)
    # PUTs: 2000 a day x 30.41667 days = 60,833.3 a month / 1000 x $0.005 = $0.304167.
    assert steady.put_usd_per_month == pytest.approx(0.304167, abs=1e-6)
    # GETs: none by default.
    assert steady.get_usd_per_month == 0
    assert steady.total_usd_per_month == pytest.approx(0.279397 + 0.304167, abs=1e-6)


def test_bucket_fills_in_the_first_month_then_holds_steady() -> None:
    inputs = BucketInputs(users=1000, uploads_per_user_per_day=2, avg_image_kb=200, retention_days=30, months=3)
    months = estimate.estimate_bucket(inputs, S3).months

    first, second, third = months
    # Intake r = 0.4 GB/day from day 0. Stored S(t) = r min(t, 30), and L = 30.4167 > 30, so the
    # bucket is full (12 GB) by the end of month 1.
    assert first.stored_gb_end == pytest.approx(12.0)
    # Month 1's mean: (1/L) [integral_0^L r t dt - integral_0^(L-30) r u du] = r (L^2 - (L-30)^2) / (2L)
    #   = r x 30 x (1 - 15/L) = 12 GB x (1 - 0.493151) = 6.082192 GB.
    assert first.stored_gb_mean == pytest.approx(12 * (1 - 15 / L))
    assert first.stored_gb_mean == pytest.approx(6.082192, abs=1e-6)
    assert first.storage_usd == pytest.approx(6.082192e9 / GIB * 0.025, rel=1e-6)
    # From month 2 on t - 30 > 0 all month: S = r x 30 = 12 GB throughout.
    assert second.stored_gb_mean == pytest.approx(12.0)
    assert third.stored_gb_end == pytest.approx(12.0)
    assert second.storage_usd == pytest.approx(12e9 / GIB * 0.025)
    # One PUT per upload: 2000/day x L = 60,833.3 a month, every month: $0.304167.
    assert [m.uploads for m in months] == pytest.approx([2000 * L] * 3)
    assert second.put_usd == pytest.approx(0.304167, abs=1e-6)
    assert second.get_usd == 0
    # Expirations (free): uploads of days (0 - 30, L - 30] = the first 0.41667 days' 833.3 in
    # month 1; a whole month's 60,833.3 in month 2.
    assert first.expirations == pytest.approx(2000 * (L - 30))
    assert first.expirations == pytest.approx(833.33, abs=0.01)
    assert second.expirations == pytest.approx(2000 * L)
    assert second.total_usd == pytest.approx(second.storage_usd + second.put_usd)


def test_growth_compounds_month_by_month() -> None:
    # 1000 users growing 50% a month: 1000, 1500, 2250 (1000 x 1.5^2). 1 upload/user/day of
    # 1000 kB (1 MB): intake 1, 1.5, 2.25 GB/day. Retention 10 days.
    inputs = BucketInputs(
        users=1000, uploads_per_user_per_day=1, avg_image_kb=1000, retention_days=10, monthly_growth=0.5, months=3
    )
    result = estimate.estimate_bucket(inputs, S3)
    first, second, third = result.months

    assert [m.users for m in result.months] == pytest.approx([1000, 1500, 2250])
    assert third.uploads == pytest.approx(2250 * L)  # each day's intake follows that month's users
    # End of month 3: the last 10 days, all in month 3: 2.25 GB/day x 10 = 22.5 GB.
    assert third.stored_gb_end == pytest.approx(22.5)
    # Month 2's mean: the first 10 days the window spans both months, then only month 2:
    #   [(r1 + r2) x D^2/2 + r2 x D x (L - D)] / L = [2.5 x 50 + 1.5 x 10 x 20.41667] / 30.41667
    #   = (125 + 306.25) / 30.41667 = 14.178082 GB.
    assert second.stored_gb_mean == pytest.approx((125 + 1.5 * 10 * (L - 10)) / L)
    assert second.stored_gb_mean == pytest.approx(14.178082, abs=1e-6)
    # Month 1: empty at day 0, full (10 GB) after 10 days: [10^2/2 + 10 x (L - 10)] / L = 8.356164 GB.
    assert first.stored_gb_mean == pytest.approx((50 + 10 * (L - 10)) / L)
    # Steady state at month 1's users (10 GB) and at month 3's (22.5 GB).
    assert [s.stored_gb for s in result.steady] == pytest.approx([10.0, 22.5])


def test_retention_longer_than_a_month() -> None:
    # 1 GB/day (1000 users x 1 x 1 MB), kept 45 days: nothing expires in month 1.
    inputs = BucketInputs(users=1000, uploads_per_user_per_day=1, avg_image_kb=1000, retention_days=45, months=3)
    first, second, third = estimate.estimate_bucket(inputs, S3).months

    # Month 1: S(t) = t GB, mean L/2 = 15.208333 GB.
    assert first.stored_gb_mean == pytest.approx(L / 2)
    # Month 2: S(t) = t until day 45, then 45: [(45^2 - L^2)/2 + 45 (2L - 45)] / L
    #   = [(2025 - 925.1736)/2 + 45 x 15.8333] / 30.41667 = (549.9132 + 712.5) / 30.41667 = 41.504 GB.
    assert second.stored_gb_mean == pytest.approx(((45**2 - L**2) / 2 + 45 * (2 * L - 45)) / L)
    assert second.stored_gb_mean == pytest.approx(41.504, abs=1e-3)
    assert first.expirations == 0
    # Month 2 (days 30.42-60.83) expires the uploads of days (0, 2L - 45] = (0, 15.83]: 15,833.3.
    assert second.expirations == pytest.approx(1000 * (2 * L - 45))
    assert second.expirations == pytest.approx(15_833.33, abs=0.01)
    # Month 3 expires the uploads of days (2L - 45, 3L - 45] = (15.83, 46.25]: 30.4167 days' worth.
    assert third.expirations == pytest.approx(1000 * L)
    assert third.stored_gb_end == pytest.approx(45.0)


def test_gets_are_priced_when_asked_for() -> None:
    # 2 reads per upload: 2 x 60,833.3 = 121,666.7 GETs / 1000 x $0.0004 = $0.048667 a month.
    inputs = BucketInputs(
        users=1000, uploads_per_user_per_day=2, avg_image_kb=200, retention_days=30, gets_per_upload=2
    )
    steady = estimate.steady_state(inputs, 1000, S3)
    assert steady.get_usd_per_month == pytest.approx(0.048667, abs=1e-6)


def test_storage_and_request_prices() -> None:
    # 1 GiB for a month at $0.025; 1,000,000 PUTs at $0.005/1000 = $5.
    assert estimate.storage_usd(GIB, 0.025) == pytest.approx(0.025)
    assert estimate.requests_usd(1_000_000, 0.005) == pytest.approx(5.0)


# Inference -----------------------------------------------------------------------------------------


def test_realtime_is_always_on() -> None:
    # 730 h a month x instances, whatever the traffic.
    assert estimate.realtime_instance_hours(CostInputs(requests_per_day=10)) == 730
    assert estimate.realtime_instance_hours(CostInputs(requests_per_day=10, instances=2)) == 1460
    # 200,000 requests x 1 s = 200,000 busy s a day / 86,400 = 2.31: 3 instances, 2190 h.
    assert estimate.realtime_instance_hours(CostInputs(requests_per_day=200_000)) == 2190


def test_async_is_busy_time_when_there_is_no_tail() -> None:
    # No scale-up, no idle tail: billed = busy time = 1000 requests x 2 s = 2000 s a day
    #   = 0.55556 h x 30.41667 days = 16.898 h a month.
    inputs = CostInputs(
        requests_per_day=1000, mode="async", gpu_seconds_per_request=2, scale_up_seconds=0, idle_tail_seconds=0
    )
    assert estimate.async_instance_seconds_per_day(inputs) == pytest.approx(2000)
    assert estimate.async_instance_hours(inputs) == pytest.approx(2000 / 3600 * L)
    assert estimate.async_instance_hours(inputs) == pytest.approx(16.898, abs=1e-3)
    assert estimate.gpu_busy_hours(inputs) == pytest.approx(16.898, abs=1e-3)


def test_async_adds_a_scale_up_and_an_idle_tail_per_burst() -> None:
    # 24 requests/day over 24 h: rate 1 per 3600 s. Tail T = 900 s: P(gap > T) = e^-0.25 = 0.778801.
    # billed s/day = N s + A (1 - e^-rT) + N e^-rT S
    #   = 24 x 1 + 86,400 x 0.221199 + 24 x 0.778801 x 300 = 24 + 19,111.61 + 5,607.37 = 24,742.98 s
    #   = 6.87305 h/day x 30.41667 = 209.055 h a month; scale-ups 24 x 0.778801 = 18.69 a day.
    inputs = CostInputs(requests_per_day=24, mode="async", scale_up_seconds=300, idle_tail_seconds=900)
    assert estimate.async_instance_seconds_per_day(inputs) == pytest.approx(24_742.98, abs=0.01)
    assert estimate.async_instance_hours(inputs) == pytest.approx(209.055, abs=1e-3)
    assert estimate.async_bursts_per_day(inputs) == pytest.approx(18.691, abs=1e-3)


def test_async_single_requests_each_pay_scale_up_work_and_tail() -> None:
    # Very sparse traffic: every request is its own burst: S + s + T = 300 + 1 + 900 = 1201 s.
    inputs = CostInputs(requests_per_day=0.01, mode="async")
    assert estimate.async_instance_seconds_per_day(inputs) / 0.01 == pytest.approx(1201, rel=1e-3)


def test_async_never_costs_more_than_always_on() -> None:
    busy = CostInputs(requests_per_day=5000, mode="async")
    assert estimate.async_instance_seconds_per_day(busy) == pytest.approx(86_400)


def test_break_even_on_busy_time_alone() -> None:
    # No tail, no scale-up, async at $2/h vs real-time at $1/h: async = 2 x N x 2 s / 3600 x L,
    # real-time = 730 x $1. Equal when 4 N = 86,400 s: N = 21,600 requests/day.
    prices = InstancePrices(realtime_per_hour=price(1.0), async_per_hour=price(2.0))
    inputs = CostInputs(requests_per_day=1, gpu_seconds_per_request=2, scale_up_seconds=0, idle_tail_seconds=0)
    assert estimate.break_even_requests_per_day(inputs, prices) == pytest.approx(21_600, rel=1e-6)


def test_break_even_with_the_default_tails() -> None:
    # Same price both ways: break-even where the async endpoint is billed all day:
    #   N x 1 + 86,400 (1 - e^(-N 900/86,400)) + N e^(-N 900/86,400) x 300 = 86,400, at N ~ 272.
    inputs = CostInputs(requests_per_day=100)
    even = estimate.break_even_requests_per_day(inputs, G5)
    assert even is not None
    assert even == pytest.approx(272.5, abs=0.5)
    p = math.exp(-even * 900 / 86_400)
    assert even + 86_400 * (1 - p) + even * p * 300 == pytest.approx(86_400, rel=1e-6)


def test_no_break_even_when_async_is_cheaper_per_hour() -> None:
    prices = InstancePrices(realtime_per_hour=price(1.0), async_per_hour=price(0.5))
    assert estimate.break_even_requests_per_day(CostInputs(requests_per_day=10), prices, ceiling=1e6) is None


def test_openai_dollars_per_request_and_month() -> None:
    # 1000 input x $0.25/1M + 300 output x $2/1M = $0.00025 + $0.0006 = $0.00085 a request.
    assert estimate.openai_usd_per_request(1000, 300, MINI) == pytest.approx(0.00085)
    # 100 requests/day x 30.41667 days = 3,041.67 requests x $0.00085 = $2.5854 a month, both modes.
    result = estimate.estimate_cost(CostInputs(requests_per_day=100), G5, MINI)
    assert result.realtime.openai_usd == pytest.approx(2.5854, abs=1e-4)
    assert result.async_.openai_usd == result.realtime.openai_usd


def test_cost_estimate_totals() -> None:
    # Real-time at $1/h: 730 h = $730 + $2.5854 OpenAI = $732.5854 a month / 3,041.67 = $0.240850 a request.
    result = estimate.estimate_cost(CostInputs(requests_per_day=100, mode="async"), G5, MINI)
    assert result.realtime.gpu_usd == pytest.approx(730)
    assert result.realtime.total_usd == pytest.approx(732.5854, abs=1e-4)
    assert result.realtime.usd_per_request == pytest.approx(0.240850, abs=1e-6)
    assert result.selected is result.async_
    assert result.async_.gpu_usd == pytest.approx(estimate.async_instance_hours(result.inputs))
    assert result.async_.total_usd < result.realtime.total_usd


# Prices --------------------------------------------------------------------------------------------


def test_packaged_prices_cover_the_regions_instances_and_models() -> None:
    book = estimate.load_prices()
    assert {"ca-central-1", "us-east-1"} <= set(book.regions)
    for region in ("ca-central-1", "us-east-1"):
        assert {"ml.g5.xlarge", "ml.g5.2xlarge"} <= set(book.region(region).sagemaker)
    assert {"gpt-5-mini", "gpt-5-nano", "gpt-4o-mini"} <= set(book.openai)
    # Every figure says where it comes from; the unconfirmed ones say why.
    figures: list[Price] = []
    for region in book.regions.values():
        s3 = region.s3_standard
        figures += [s3.storage_per_gb_month, s3.put_per_1000, s3.get_per_1000]
        for instance in region.sagemaker.values():
            figures += [instance.realtime_per_hour, instance.async_per_hour]
    for model in book.openai.values():
        figures += [model.input_per_1m, model.output_per_1m]
    for figure in figures:
        assert figure.usd > 0
        assert figure.source.startswith("https://")
        if figure.confidence == "unconfirmed":
            assert figure.note


def test_default_image_size_is_the_measured_one() -> None:
    measured = json.loads((Path(__file__).parents[2] / "bench" / "results" / "image_sizes.json").read_text())
    assert measured["stored_mean_kb"] == estimate.DEFAULT_AVG_IMAGE_KB


# The command line ----------------------------------------------------------------------------------

BUCKET = [
    "bucket",
    "--users",
    "1000",
    "--uploads-per-user-per-day",
    "2",
    "--avg-image-kb",
    "200",
    "--retention-days",
    "30",
]
COST = ["cost", "--requests-per-day", "100"]


def test_bucket_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*BUCKET, "--months", "3"]) == 0

    out = capsys.readouterr().out
    assert "S3 bucket estimate: ca-central-1" in out
    assert "GB at end" in out
    assert "12.0 GB stored" in out  # the steady state
    assert "GETs: none" in out
    assert "expirations and DELETE requests are free" in out


def test_bucket_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*BUCKET, "--region", "us-east-1", "--monthly-growth", "0.1", "--months", "4", "--json"]) == 0

    document = json.loads(capsys.readouterr().out)
    assert document["command"] == "bucket"
    assert document["region"] == "us-east-1"
    assert len(document["months"]) == 4
    assert document["months"][3]["users"] == pytest.approx(1331)  # 1000 x 1.1^3
    assert document["steady"][0]["stored_gb"] == pytest.approx(12.0)
    assert document["prices"]["s3_storage_per_gb_month"]["usd"] == 0.023


def test_cost_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*COST, "--mode", "async", "--openai-model", "gpt-5-nano"]) == 0

    out = capsys.readouterr().out
    assert "real-time (always on)" in out
    assert "async (scale to zero) *" in out
    assert "Break-even: ~" in out
    assert "ASSUMED, not measured" in out


def test_cost_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*COST, "--instance", "ml.g5.2xlarge", "--region", "us-east-1", "--json"]) == 0

    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert document["command"] == "cost"
    assert document["realtime"]["instance_hours"] == 730
    assert document["realtime"]["gpu_usd"] == pytest.approx(730 * 1.515)
    assert document["async"]["instance_hours"] < 730
    assert document["selected"]["mode"] == "realtime"
    assert document["break_even_requests_per_day"] == pytest.approx(272.5, abs=0.5)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bucket", "--users", "-5", "--uploads-per-user-per-day", "2", "--retention-days", "30"], "--users"),
        ([*BUCKET, "--region", "mars-1"], "known: ca-central-1, us-east-1"),
        ([*COST, "--instance", "ml.p5.48xlarge"], "known: ml.g5.2xlarge, ml.g5.xlarge"),
        ([*COST, "--openai-model", "gpt-9"], "known: gpt-4.1-mini"),
        ([*COST, "--requests-per-day", "0"], "must be above 0"),
        ([*BUCKET, "--months", "1000"], "from 1 to 240"),
        ([*COST, "--requests-per-day", "lots"], "is not a number"),
        ([*BUCKET, "--monthly-growth", "-1"], "above -1"),
        (["bucket", "--users", "5"], "required"),
        ([*COST, "--mode", "batch"], "invalid choice"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("estimate: error: ")
    assert message in captured.err


def test_a_broken_prices_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "prices.json"
    broken.write_text('{"schema_version": 1}')

    assert main([*COST, "--prices", str(broken)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "not a valid prices file" in err


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv", [BUCKET, [*COST, "--mode", "async"]], ids=["bucket", "cost"])
def test_plot_writes_a_png(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "plot.png"

    assert main([*argv, "--plot", str(out)]) == 0

    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 10_000  # axes, curves and labels, not an empty canvas
    assert f"wrote {out}" in capsys.readouterr().out


def test_plot_without_matplotlib_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError

    assert main([*COST, "--plot", str(tmp_path / "plot.png")]) == 1

    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "needs matplotlib" in err
    assert not (tmp_path / "plot.png").exists()
