"""Estimate what the service costs to run: the S3 image bucket, and inference (GPU + OpenAI).

    python -m app.ops.estimate bucket --users 1000 --uploads-per-user-per-day 2 --retention-days 30
        [--avg-image-kb 67.1] [--monthly-growth 0.10 --months 12] [--gets-per-upload 0]
    python -m app.ops.estimate cost --requests-per-day 500 [--mode realtime|async]
        [--instance ml.g5.xlarge] [--instances 1] [--openai-model gpt-5-mini]
        [--gpu-seconds-per-request 1.0] [--scale-up-seconds 300] [--idle-tail-seconds 900]
        [--active-hours 24] [--input-tokens 1000] [--output-tokens 300]
    both: [--region ca-central-1] [--prices FILE] [--json] [--plot FILE.png]

Prices come from `app/ops/prices.json` (per region; each figure with its source, the date it was
found and a confidence). A month is AWS's billing month, 730 hours (30.42 days). Sizes are
decimal (1 kB = 1,000 bytes, 1 GB = 10^9 bytes); S3 bills binary GB (2^30 bytes), and the
storage cost is computed on those.

bucket: every upload is stored once, normalized (`app.services.images`: EXIF stripped, long side
1024, JPEG quality 85), one PUT each; the app never reads an image back, so GETs are 0 unless
`--gets-per-upload` says otherwise. A lifecycle rule expires each image `--retention-days` after
its upload. Users start at `--users` in month 1 and grow by `--monthly-growth` (a fraction: 0.10
is 10%) each month, compounding; every day's intake follows that month's users. The bucket starts
empty, so:

    stored(t)       = intake uploaded in the last D days = C(t) - C(t - D)   (C: cumulative intake)
    steady state    = daily intake x D                                       (constant users)
    storage $/month = mean of stored(t) over the month, in GiB, x the GB-month price
    PUT $/month     = uploads that month / 1000 x the PUT price

C is piecewise linear, so the monthly means are exact (no day-by-day simulation). Expirations
(lifecycle) and DELETE requests (a user deleting an analysis) are free, and an expired object is
not billed from its expiration date on; they are counted, not priced.

cost: per request, one BLIP-2 call on a SageMaker G5 endpoint and one OpenAI call.

- real-time: the endpoint is always on: 730 h x instances a month, whatever the traffic (at least
  enough instances to carry the busy time);
- async, scale to zero: requests arrive at random (Poisson) spread over `--active-hours` a day.
  An instance is billed while it works (`--gpu-seconds-per-request`), while it waits for the next
  request if that comes within the idle tail (`--idle-tail-seconds`, after which autoscaling
  removes it), and for the scale-up (`--scale-up-seconds`) of every burst that starts at zero:

      billed s/day = N s + A (1 - e^(-N T / A)) + N e^(-N T / A) S      (A = active seconds a day)

  capped at always-on. Below the break-even (where that cap is reached) async is cheaper; above,
  the endpoint is never idle long enough to scale in and costs what a real-time one costs.
- OpenAI: tokens x the model's price per million, the same in both modes, so it does not move
  the break-even.

The defaults below that are assumptions, not measurements, say so, and each has a flag.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal, NoReturn, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

HOURS_PER_MONTH: Final = 730.0  # AWS's billing month
DAYS_PER_MONTH: Final = HOURS_PER_MONTH / 24
SECONDS_PER_DAY: Final = 86_400.0
BYTES_PER_KB: Final = 1_000
BYTES_PER_GB: Final = 1_000_000_000  # what the tables show
BYTES_PER_BILLED_GB: Final = 2**30  # what S3 bills a "GB-month" on

# The mean size of the JPEG the app stores, measured, not assumed: `python -m bench.image_sizes`
# normalizes 36 synthetic phone photos (tests/imagegen.product_image and bench/preprocess's photo,
# 1.9 to 24 MP, 3 seeds each) with the service's defaults and writes bench/results/image_sizes.json:
# stored_mean_kb = 67.1 (43-139 kB; bench/preprocess.py's own 12 MP photo stores 75.5 kB). The
# photos are synthetic: gradients, shapes and noise, no real texture, so this is a lower bound;
# detailed real photos commonly store at 100-250 kB. Pass --avg-image-kb from real uploads.
DEFAULT_AVG_IMAGE_KB: Final = 67.1

# ASSUMED, not measured: GPU time of one request, BLIP-2 OPT-2.7B in fp16 on one A10G (ml.g5):
# the image encoded once, 7 prompts (caption + 6 questions) decoded together for at most 30
# tokens. Decoding is memory-bound: 5.4 GB of OPT-2.7B weights read per step at the A10G's
# 600 GB/s is a 9 ms roofline, so 30 steps take ~0.3-0.5 s; the ViT-g encoder, the prefill and the
# JSON/base64 round trip add ~0.1-0.2 s. 1.0 s leaves about 2x headroom. bench/results/
# model-cpu-tiny.json times the tiny random model on a CPU, which says nothing about this; measure
# with `python -m bench.model --architecture blip2-opt-2.7b` on a G5.
DEFAULT_GPU_SECONDS_PER_REQUEST: Final = 1.0
# ASSUMED: async scale-to-zero as model/deploy.py sets it up. From zero, the HasBacklogWithoutCapacity
# alarm needs 2 minutes (not billed: no instance yet), then a G5 starts and loads the model: 300 s
# billed. An idle instance leaves when target tracking's scale-in alarm fires, 15 one-minute
# periods under target by AWS's default: a 900 s billed tail after the last request of a burst.
DEFAULT_SCALE_UP_SECONDS: Final = 300.0
DEFAULT_IDLE_TAIL_SECONDS: Final = 900.0
# ESTIMATED from the prompt app.services.prompts builds: the system message is 1,939 characters,
# the user message ~540 for a caption, 6 answers and a short hint, and the LLMReport JSON schema
# that structured outputs sends is ~1,285: ~3,760 characters at ~4 per token ~ 940, rounded up.
# The system message (~500 tokens) is under OpenAI's 1,024-token minimum for prompt caching, so
# no cached-input discount is counted.
DEFAULT_INPUT_TOKENS: Final = 1_000
# ESTIMATED: the report (title, brand, category, ~5 attributes, condition, 1-3 sentences, up to 10
# tags) is ~600-900 characters of JSON, ~150-250 tokens; gpt-5 models bill reasoning tokens as
# output too, few at OPENAI_REASONING_EFFORT=minimal.
DEFAULT_OUTPUT_TOKENS: Final = 300

DEFAULT_REGION: Final = "ca-central-1"
DEFAULT_INSTANCE: Final = "ml.g5.xlarge"
DEFAULT_OPENAI_MODEL: Final = "gpt-5-mini"  # Settings.openai_model's default
DEFAULT_MONTHS: Final = 12
PRICES_FILE: Final = "prices.json"
Mode = Literal["realtime", "async"]
_T = TypeVar("_T")


class UsageError(Exception):
    """Bad input: the command exits 2 with this one-line message."""


class PlotError(Exception):
    """The plot could not be drawn or written: the command exits 1 with this one-line message."""


# Prices --------------------------------------------------------------------------------------------


class Price(BaseModel):
    """One figure of prices.json, with where and when it was seen and how sure it is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    usd: float = Field(ge=0)
    source: str
    found: str
    confidence: Literal["confirmed", "secondary", "unconfirmed"]
    note: str | None = None


class S3Prices(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    storage_per_gb_month: Price
    put_per_1000: Price
    get_per_1000: Price


class InstancePrices(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    realtime_per_hour: Price
    async_per_hour: Price

    def per_hour(self, mode: Mode) -> Price:
        return self.realtime_per_hour if mode == "realtime" else self.async_per_hour


class RegionPrices(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    s3_standard: S3Prices
    sagemaker: dict[str, InstancePrices]


class ModelPrices(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_1m: Price
    output_per_1m: Price


class PriceBook(BaseModel):
    """prices.json: per region S3 and SageMaker prices, and OpenAI's per model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1]
    currency: Literal["USD"]
    compiled: str
    about: list[str]
    confidence_levels: dict[str, str]
    regions: dict[str, RegionPrices]
    openai: dict[str, ModelPrices]

    def region(self, name: str) -> RegionPrices:
        """The region's prices; an unknown region is a `UsageError` naming the known ones."""
        return _lookup(self.regions, name, "region")

    def instance(self, region: str, name: str) -> InstancePrices:
        return _lookup(self.region(region).sagemaker, name, "instance type", f" in {region}")

    def model(self, name: str) -> ModelPrices:
        return _lookup(self.openai, name, "OpenAI model")


def _lookup(table: dict[str, _T], name: str, what: str, where: str = "") -> _T:
    try:
        return table[name]
    except KeyError:
        raise UsageError(f"unknown {what} {name!r}{where}; known: {', '.join(sorted(table))}") from None


def load_prices(path: Path | None = None) -> PriceBook:
    """Read and check prices.json: the packaged one, or `path`."""
    try:
        if path is None:
            text = resources.files(__package__ or "app.ops").joinpath(PRICES_FILE).read_text(encoding="utf-8")
        else:
            text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read the prices file {path}: {exc.strerror or exc}") from exc
    try:
        return PriceBook.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise UsageError(
            f"{path or PRICES_FILE} is not a valid prices file: {where}: {first['msg']} ({exc.error_count()} errors)"
        ) from exc


# The bucket ----------------------------------------------------------------------------------------


class _Intake:
    """A daily intake that is constant within each month (zero before day 0), and its integrals.

    `cumulative(t)` (the total taken in by day t) is piecewise linear with corners at month
    boundaries, so trapezoids between corners integrate it exactly.
    """

    def __init__(self, per_day: Sequence[float], month_days: float) -> None:
        self._per_day = list(per_day)
        self._month_days = month_days
        self._before = [0.0]  # cumulative intake at the start of each month
        for rate in self._per_day:
            self._before.append(self._before[-1] + rate * month_days)

    def cumulative(self, t: float) -> float:
        if t <= 0:
            return 0.0
        month = min(int(t // self._month_days), len(self._per_day) - 1)  # past the end: the last rate goes on
        return self._before[month] + self._per_day[month] * (t - month * self._month_days)

    def integral(self, start: float, end: float) -> float:
        """The integral of `cumulative` from `start` to `end` (days)."""
        first = max(0, math.floor(start / self._month_days) + 1)
        corners = [k * self._month_days for k in range(first, len(self._per_day))]
        points = [start, *(c for c in corners if start < c < end), end]
        return sum((b - a) * (self.cumulative(a) + self.cumulative(b)) / 2 for a, b in itertools.pairwise(points))


@dataclass(frozen=True, slots=True)
class BucketInputs:
    users: int
    uploads_per_user_per_day: float
    retention_days: int
    avg_image_kb: float = DEFAULT_AVG_IMAGE_KB
    monthly_growth: float = 0.0
    months: int = DEFAULT_MONTHS
    gets_per_upload: float = 0.0

    def users_in_month(self, month: int) -> float:
        """Users in `month` (1-based): compounding growth from `users` in month 1."""
        return self.users * (1 + self.monthly_growth) ** (month - 1)

    def uploads_per_day(self, month: int) -> float:
        return self.users_in_month(month) * self.uploads_per_user_per_day

    @property
    def image_bytes(self) -> float:
        return self.avg_image_kb * BYTES_PER_KB


@dataclass(frozen=True, slots=True)
class BucketMonth:
    month: int
    users: float
    uploads: float
    stored_gb_end: float  # at the end of the month
    stored_gb_mean: float  # the month's mean: what is billed (as GiB-months)
    storage_usd: float
    put_usd: float
    get_usd: float
    expirations: float  # lifecycle expirations: free
    total_usd: float


@dataclass(frozen=True, slots=True)
class SteadyState:
    users: float
    uploads_per_day: float
    intake_gb_per_day: float
    stored_gb: float  # = daily intake x retention
    storage_usd_per_month: float
    put_usd_per_month: float
    get_usd_per_month: float
    total_usd_per_month: float


@dataclass(frozen=True, slots=True)
class BucketEstimate:
    inputs: BucketInputs
    months: list[BucketMonth]
    steady: list[SteadyState]  # at month 1's users and, with growth, at the last month's


def storage_usd(mean_stored_bytes: float, price_per_gb_month: float) -> float:
    """A month's S3 storage charge: its mean stored bytes in binary GB, times the GB-month price."""
    return mean_stored_bytes / BYTES_PER_BILLED_GB * price_per_gb_month


def requests_usd(requests: float, price_per_1000: float) -> float:
    return requests / 1000 * price_per_1000


def steady_state(inputs: BucketInputs, users: float, s3: S3Prices) -> SteadyState:
    """The bucket once it is full: daily intake x retention, with `users` constant."""
    uploads_per_day = users * inputs.uploads_per_user_per_day
    stored_bytes = uploads_per_day * inputs.image_bytes * inputs.retention_days
    uploads_per_month = uploads_per_day * DAYS_PER_MONTH
    storage = storage_usd(stored_bytes, s3.storage_per_gb_month.usd)
    put = requests_usd(uploads_per_month, s3.put_per_1000.usd)
    get = requests_usd(uploads_per_month * inputs.gets_per_upload, s3.get_per_1000.usd)
    return SteadyState(
        users=users,
        uploads_per_day=uploads_per_day,
        intake_gb_per_day=uploads_per_day * inputs.image_bytes / BYTES_PER_GB,
        stored_gb=stored_bytes / BYTES_PER_GB,
        storage_usd_per_month=storage,
        put_usd_per_month=put,
        get_usd_per_month=get,
        total_usd_per_month=storage + put + get,
    )


def estimate_bucket(inputs: BucketInputs, s3: S3Prices) -> BucketEstimate:
    """Month by month from an empty bucket, and the steady state."""
    length, keep = DAYS_PER_MONTH, float(inputs.retention_days)
    uploads = _Intake([inputs.uploads_per_day(m) for m in range(1, inputs.months + 1)], length)
    size = inputs.image_bytes
    rows: list[BucketMonth] = []
    for month in range(1, inputs.months + 1):
        start, end = (month - 1) * length, month * length
        # Objects stored at t are those uploaded in (t - keep, t]: C(t) - C(t - keep).
        stored_end = (uploads.cumulative(end) - uploads.cumulative(end - keep)) * size
        stored_mean = (uploads.integral(start, end) - uploads.integral(start - keep, end - keep)) / length * size
        count = uploads.cumulative(end) - uploads.cumulative(start)
        storage = storage_usd(stored_mean, s3.storage_per_gb_month.usd)
        put = requests_usd(count, s3.put_per_1000.usd)
        get = requests_usd(count * inputs.gets_per_upload, s3.get_per_1000.usd)
        rows.append(
            BucketMonth(
                month=month,
                users=inputs.users_in_month(month),
                uploads=count,
                stored_gb_end=stored_end / BYTES_PER_GB,
                stored_gb_mean=stored_mean / BYTES_PER_GB,
                storage_usd=storage,
                put_usd=put,
                get_usd=get,
                expirations=uploads.cumulative(end - keep) - uploads.cumulative(start - keep),
                total_usd=storage + put + get,
            )
        )
    steady = [steady_state(inputs, inputs.users, s3)]
    if inputs.monthly_growth and inputs.months > 1:
        steady.append(steady_state(inputs, inputs.users_in_month(inputs.months), s3))
    return BucketEstimate(inputs=inputs, months=rows, steady=steady)


# Inference -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CostInputs:
    requests_per_day: float
    mode: Mode = "realtime"
    instances: int = 1  # the real-time endpoint's minimum instance count
    gpu_seconds_per_request: float = DEFAULT_GPU_SECONDS_PER_REQUEST
    scale_up_seconds: float = DEFAULT_SCALE_UP_SECONDS
    idle_tail_seconds: float = DEFAULT_IDLE_TAIL_SECONDS
    active_hours: float = 24.0
    input_tokens: int = DEFAULT_INPUT_TOKENS
    output_tokens: int = DEFAULT_OUTPUT_TOKENS


def instances_needed(requests_per_day: float, gpu_seconds_per_request: float) -> int:
    """The fewest instances whose whole day covers the day's GPU busy time (at least 1)."""
    busy = requests_per_day * gpu_seconds_per_request
    return max(1, math.ceil(busy / SECONDS_PER_DAY - 1e-9))


def realtime_instance_hours(inputs: CostInputs) -> float:
    """Always on: 730 h a month per instance, with enough instances for the busy time."""
    count = max(inputs.instances, instances_needed(inputs.requests_per_day, inputs.gpu_seconds_per_request))
    return HOURS_PER_MONTH * count


def async_bursts_per_day(inputs: CostInputs) -> float:
    """Scale-ups from zero a day: requests whose idle gap before them outlasted the idle tail."""
    if inputs.requests_per_day <= 0:
        return 0.0
    rate = inputs.requests_per_day / (inputs.active_hours * 3600)  # Poisson arrivals, per second
    return inputs.requests_per_day * math.exp(-rate * inputs.idle_tail_seconds)


def async_instance_seconds_per_day(inputs: CostInputs) -> float:
    """Billed instance-seconds a day of an async endpoint that scales to zero (see the module docstring)."""
    n = inputs.requests_per_day
    if n <= 0:
        return 0.0
    active = inputs.active_hours * 3600
    rate = n / active
    new_burst = math.exp(-rate * inputs.idle_tail_seconds)  # P(the gap before a request > the idle tail)
    # Per request: its GPU time, the idle time after it up to the tail (E[min(gap, T)] = (1 - e^-rT) / r),
    # and a scale-up when it finds no instance.
    billed = n * inputs.gpu_seconds_per_request + active * (1 - new_burst) + n * new_burst * inputs.scale_up_seconds
    always_on = SECONDS_PER_DAY * instances_needed(n, inputs.gpu_seconds_per_request)
    return min(billed, always_on)


def async_instance_hours(inputs: CostInputs) -> float:
    return async_instance_seconds_per_day(inputs) / 3600 * DAYS_PER_MONTH


def gpu_busy_hours(inputs: CostInputs) -> float:
    """Hours a month the GPU actually works: requests x GPU seconds per request."""
    return inputs.requests_per_day * inputs.gpu_seconds_per_request / 3600 * DAYS_PER_MONTH


def instance_hours(inputs: CostInputs, mode: Mode) -> float:
    return realtime_instance_hours(inputs) if mode == "realtime" else async_instance_hours(inputs)


def openai_usd_per_request(input_tokens: int, output_tokens: int, prices: ModelPrices) -> float:
    return (input_tokens * prices.input_per_1m.usd + output_tokens * prices.output_per_1m.usd) / 1_000_000


def break_even_requests_per_day(
    inputs: CostInputs, prices: InstancePrices, *, ceiling: float = 10_000_000
) -> float | None:
    """Requests a day above which async scale-to-zero stops being cheaper than real-time (GPU only).

    Async costs nothing at no traffic and grows with it; the search walks up a geometric grid to
    the first volume where async costs at least as much, then bisects. None: no such volume below
    `ceiling`.
    """

    def gap(n: float) -> float:
        at = CostInputs(**{**asdict(inputs), "requests_per_day": n})
        return (
            async_instance_hours(at) * prices.async_per_hour.usd
            - realtime_instance_hours(at) * prices.realtime_per_hour.usd
        )

    low, high = 0.0, 1.0
    while high <= ceiling:
        if gap(high) >= -1e-9:
            for _ in range(60):
                middle = (low + high) / 2
                low, high = (low, middle) if gap(middle) >= -1e-9 else (middle, high)
            return high
        low, high = high, high * 1.25
    return None


@dataclass(frozen=True, slots=True)
class ModeCost:
    mode: Mode
    instance_hours: float
    gpu_usd: float
    openai_usd: float
    total_usd: float
    usd_per_request: float


@dataclass(frozen=True, slots=True)
class CostEstimate:
    inputs: CostInputs
    requests_per_month: float
    gpu_busy_hours: float
    instances_needed: int
    async_bursts_per_day: float
    openai_usd_per_request: float
    realtime: ModeCost
    async_: ModeCost
    break_even_requests_per_day: float | None

    @property
    def selected(self) -> ModeCost:
        return self.realtime if self.inputs.mode == "realtime" else self.async_


def estimate_cost(inputs: CostInputs, instance: InstancePrices, model: ModelPrices) -> CostEstimate:
    """GPU hours and dollars in both modes, OpenAI dollars, and the break-even."""
    per_month = inputs.requests_per_day * DAYS_PER_MONTH
    openai_each = openai_usd_per_request(inputs.input_tokens, inputs.output_tokens, model)

    def mode_cost(mode: Mode) -> ModeCost:
        hours = instance_hours(inputs, mode)
        gpu = hours * instance.per_hour(mode).usd
        openai = openai_each * per_month
        return ModeCost(
            mode=mode,
            instance_hours=hours,
            gpu_usd=gpu,
            openai_usd=openai,
            total_usd=gpu + openai,
            usd_per_request=(gpu + openai) / per_month if per_month else 0.0,
        )

    return CostEstimate(
        inputs=inputs,
        requests_per_month=per_month,
        gpu_busy_hours=gpu_busy_hours(inputs),
        instances_needed=instances_needed(inputs.requests_per_day, inputs.gpu_seconds_per_request),
        async_bursts_per_day=async_bursts_per_day(inputs),
        openai_usd_per_request=openai_each,
        realtime=mode_cost("realtime"),
        async_=mode_cost("async"),
        break_even_requests_per_day=break_even_requests_per_day(inputs, instance),
    )


# Text ----------------------------------------------------------------------------------------------


def _usd(value: float) -> str:
    if value != 0 and abs(value) < 0.01:
        return f"${value:.6f}".rstrip("0")
    return f"${value:,.2f}"


def _usd4(value: float) -> str:
    return f"${value:,.4f}"


def _num(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def _gb(value: float) -> str:
    return f"{value:,.3f}" if value < 10 else f"{value:,.1f}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Aligned plain-text columns: the first left, the rest right."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        return "  ".join(
            [first.ljust(widths[0]), *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True))]
        ).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(row) for row in rows)]


def _rate(value: float) -> str:
    """A unit price as published: every digit it has."""
    return f"${value:g}"


def _price_line(label: str, price: Price, unit: str) -> str:
    return f"      {label}: {_rate(price.usd)} {unit} ({price.confidence}; {price.source}, found {price.found})"


def bucket_text(estimate: BucketEstimate, region: str, prices: RegionPrices) -> list[str]:
    inputs, s3 = estimate.inputs, prices.s3_standard
    first = estimate.steady[0]
    growth = f"{inputs.monthly_growth:+.1%}/month, compounding" if inputs.monthly_growth else "no growth"
    lines = [
        f"S3 bucket estimate: {region} ({prices.name}), S3 Standard, starting empty",
        f"  {_num(inputs.users)} users x {inputs.uploads_per_user_per_day:g} uploads/user/day x "
        f"{inputs.avg_image_kb:g} kB = {_gb(first.intake_gb_per_day)} GB/day, {_num(first.uploads_per_day)} PUTs/day",
        f"  lifecycle expiry after {inputs.retention_days} days; {growth}; "
        f"{inputs.months} months of {DAYS_PER_MONTH:.2f} days",
        "",
    ]
    headers = [
        "month",
        "users",
        "uploads",
        "GB at end",
        "GB-month",
        "storage",
        "PUTs",
        "GETs",
        "expired (free)",
        "total",
    ]
    rows = [
        [
            str(row.month),
            _num(row.users),
            _num(row.uploads),
            _gb(row.stored_gb_end),
            _gb(row.stored_gb_mean),
            _usd(row.storage_usd),
            _usd(row.put_usd),
            _usd(row.get_usd),
            _num(row.expirations),
            _usd(row.total_usd),
        ]
        for row in estimate.months
    ]
    lines += _table(headers, rows)
    total = sum(row.total_usd for row in estimate.months)
    lines += [f"  {inputs.months} months in all: {_usd(total)}", "", "Steady state (size = daily intake x retention):"]
    for state in estimate.steady:
        lines.append(
            f"  at {_num(state.users)} users: {_gb(state.intake_gb_per_day)} GB/day x {inputs.retention_days} days = "
            f"{_gb(state.stored_gb)} GB stored; {_usd(state.storage_usd_per_month)} storage + "
            f"{_usd(state.put_usd_per_month)} PUTs + {_usd(state.get_usd_per_month)} GETs = "
            f"{_usd(state.total_usd_per_month)}/month"
        )
    image_note = (
        "the measured mean of our normalized JPEGs on synthetic photos (python -m bench.image_sizes): "
        "likely low for detailed real photos"
        if inputs.avg_image_kb == DEFAULT_AVG_IMAGE_KB
        else "as given"
    )
    lines += [
        "",
        "Notes:",
        f"  - image size {inputs.avg_image_kb:g} kB: {image_note}",
        "  - one PUT per upload; GETs: "
        + (
            f"{inputs.gets_per_upload:g} per upload (--gets-per-upload)"
            if inputs.gets_per_upload
            else "none (the app never reads an image back; --gets-per-upload to add some)"
        ),
        "  - deletes: lifecycle expirations and DELETE requests are free; expired images are not billed",
        f"  - sizes in GB of 10^9 bytes; S3 bills GB of 2^30 bytes, a month is {HOURS_PER_MONTH:g} h",
        "  - prices (app/ops/prices.json):",
        _price_line("storage", s3.storage_per_gb_month, "per GB-month"),
        _price_line("PUT", s3.put_per_1000, "per 1,000"),
        _price_line("GET", s3.get_per_1000, "per 1,000"),
    ]
    return lines


def cost_text(estimate: CostEstimate, region: str, instance: str, model: str, book: PriceBook) -> list[str]:
    inputs = estimate.inputs
    gpu, llm = book.instance(region, instance), book.model(model)
    realtime, async_ = estimate.realtime, estimate.async_
    lines = [
        f"Inference cost estimate: {region}, {instance}, {model}",
        f"  {_num(inputs.requests_per_day)} requests/day = {_num(estimate.requests_per_month)}/month; "
        f"GPU busy {_num(estimate.gpu_busy_hours, 1)} h/month at {inputs.gpu_seconds_per_request:g} s/request",
        "",
    ]
    mark = {"realtime": " *" if inputs.mode == "realtime" else "", "async": " *" if inputs.mode == "async" else ""}
    headers = ["", f"real-time (always on){mark['realtime']}", f"async (scale to zero){mark['async']}"]
    rows = [
        ["price per instance-hour", _rate(gpu.realtime_per_hour.usd), _rate(gpu.async_per_hour.usd)],
        [
            "instances / scale-ups a day",
            f"{max(inputs.instances, estimate.instances_needed)} always on",
            f"{estimate.async_bursts_per_day:,.1f}",
        ],
        ["billed instance-hours/month", _num(realtime.instance_hours, 1), _num(async_.instance_hours, 1)],
        ["GPU $/month", _usd(realtime.gpu_usd), _usd(async_.gpu_usd)],
        ["OpenAI $/month", _usd(realtime.openai_usd), _usd(async_.openai_usd)],
        ["total $/month", _usd(realtime.total_usd), _usd(async_.total_usd)],
        ["total $/request", _usd4(realtime.usd_per_request), _usd4(async_.usd_per_request)],
    ]
    lines += _table(headers, rows)
    lines += [
        f"  * --mode {inputs.mode}: {_usd(estimate.selected.total_usd)}/month, "
        f"{_usd4(estimate.selected.usd_per_request)}/request",
        "",
        f"OpenAI {model}: {_num(inputs.input_tokens)} input + {_num(inputs.output_tokens)} output tokens/request "
        f"= {_usd(estimate.openai_usd_per_request)}/request "
        f"({_rate(llm.input_per_1m.usd)} in / {_rate(llm.output_per_1m.usd)} out per 1M tokens)",
    ]
    even = estimate.break_even_requests_per_day
    if even is None:
        lines.append("Break-even: none; async scale-to-zero stays cheaper at every volume up to 10M requests/day.")
    else:
        saving = realtime.total_usd - async_.total_usd
        verdict = (
            f"async saves {_usd(saving)}/month ({saving / realtime.total_usd:.0%})"
            if saving > 0.005
            else "async costs the same as real-time or more"
        )
        lines += [
            f"Break-even: ~{_num(even)} requests/day, traffic spread over {inputs.active_hours:g} h/day.",
            "  Below it async scale-to-zero is cheaper; above it the endpoint is never idle long enough to scale",
            "  in, so it costs what an always-on endpoint costs (and bursts still wait for the scale-up).",
            f"  At {_num(inputs.requests_per_day)} requests/day: {verdict}.",
        ]
    lines += [
        "",
        "Assumptions (flags to change them):",
        f"  - GPU time per request {inputs.gpu_seconds_per_request:g} s (--gpu-seconds-per-request)"
        + (
            " ASSUMED, not measured: BLIP-2 OPT-2.7B fp16 on an A10G, from its memory-bound decode roofline"
            if inputs.gpu_seconds_per_request == DEFAULT_GPU_SECONDS_PER_REQUEST
            else ""
        ),
        f"  - async: {inputs.scale_up_seconds:g} s billed scale-up per burst (--scale-up-seconds), "
        f"{inputs.idle_tail_seconds:g} s idle tail before scale-in (--idle-tail-seconds), random arrivals over "
        f"{inputs.active_hours:g} h/day (--active-hours)",
        f"  - tokens per request {_num(inputs.input_tokens)} in / {_num(inputs.output_tokens)} out "
        "(--input-tokens/--output-tokens): estimated from app/services/prompts.py, not measured",
        f"  - a month is {HOURS_PER_MONTH:g} h; real-time instances at least --instances ({inputs.instances}) "
        "and enough for the busy time",
        "  - prices (app/ops/prices.json):",
        _price_line(f"{instance} real-time", gpu.realtime_per_hour, "per hour"),
        _price_line(f"{instance} async", gpu.async_per_hour, "per hour"),
        _price_line(f"{model} input", llm.input_per_1m, "per 1M tokens"),
        _price_line(f"{model} output", llm.output_per_1m, "per 1M tokens"),
    ]
    return lines


# Plots ---------------------------------------------------------------------------------------------


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend; a dev dependency, so imported only for --plot."""
    try:
        import matplotlib
    except ImportError as exc:
        raise PlotError("--plot needs matplotlib, which is not installed (pip install matplotlib)") from exc
    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def _save(figure: Any, path: Path) -> None:
    try:
        figure.savefig(path, dpi=110)
    except (OSError, ValueError) as exc:
        raise PlotError(f"cannot write the plot {path}: {exc}") from exc


def plot_bucket(estimate: BucketEstimate, path: Path, title: str) -> None:
    plt = _pyplot()
    from matplotlib import ticker

    months = [row.month for row in estimate.months]
    figure, (size_axes, cost_axes) = plt.subplots(2, 1, sharex=True, figsize=(8, 6.5))
    try:
        size_axes.plot(months, [r.stored_gb_end for r in estimate.months], marker="o", label="stored at month end")
        size_axes.plot(
            months, [r.stored_gb_mean for r in estimate.months], marker=".", ls="--", label="monthly mean (billed)"
        )
        size_axes.set_ylabel("GB stored")
        size_axes.legend()
        size_axes.grid(alpha=0.3)
        cost_axes.plot(months, [r.total_usd for r in estimate.months], marker="o", label="total")
        cost_axes.plot(months, [r.storage_usd for r in estimate.months], ls="--", label="storage")
        cost_axes.plot(months, [r.put_usd + r.get_usd for r in estimate.months], ls=":", label="requests")
        cost_axes.set_ylabel("USD per month")
        cost_axes.set_xlabel("month")
        cost_axes.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        cost_axes.legend()
        cost_axes.grid(alpha=0.3)
        figure.suptitle(title)
        figure.tight_layout()
        _save(figure, path)
    finally:
        plt.close(figure)


def plot_cost(estimate: CostEstimate, instance: InstancePrices, model: ModelPrices, path: Path, title: str) -> None:
    plt = _pyplot()
    inputs, even = estimate.inputs, estimate.break_even_requests_per_day
    top = max(inputs.requests_per_day, even or 0.0, 100.0) * 10
    volumes = [10 ** (i / 20) for i in range(int(math.log10(top) * 20) + 1)]
    lines: dict[Mode, list[float]] = {"realtime": [], "async": []}
    for n in volumes:
        at = estimate_cost_at(inputs, n, instance, model)
        lines["realtime"].append(at.realtime.total_usd)
        lines["async"].append(at.async_.total_usd)
    figure, axes = plt.subplots(figsize=(8, 5))
    try:
        axes.plot(volumes, lines["realtime"], label="real-time, always on")
        axes.plot(volumes, lines["async"], label="async, scale to zero")
        if even is not None:
            axes.axvline(even, color="grey", ls="--")
            axes.annotate(
                f"break-even ~{even:,.0f}/day",
                (even, max(lines["realtime"]) * 0.5),
                rotation=90,
                ha="right",
                va="center",
                fontsize=9,
            )
        axes.axvline(
            inputs.requests_per_day,
            color="black",
            ls=":",
            lw=1,
            label=f"this estimate: {inputs.requests_per_day:,g}/day",
        )
        axes.set_xscale("log")
        axes.set_xlabel("requests per day")
        axes.set_ylabel("USD per month (GPU + OpenAI)")
        axes.legend()
        axes.grid(alpha=0.3, which="both")
        axes.set_title(title)
        figure.tight_layout()
        _save(figure, path)
    finally:
        plt.close(figure)


def estimate_cost_at(
    inputs: CostInputs, requests_per_day: float, instance: InstancePrices, model: ModelPrices
) -> CostEstimate:
    """`estimate_cost` at another volume, everything else equal."""
    return estimate_cost(CostInputs(**{**asdict(inputs), "requests_per_day": requests_per_day}), instance, model)


# Command line --------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad input as one `UsageError` line instead of usage + message."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _number(kind: Callable[[str], float], check: Callable[[float], bool], rule: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or not check(value):
            raise argparse.ArgumentTypeError(f"{text} must be {rule}")
        return value

    return parse


_positive = _number(float, lambda v: v > 0, "above 0")
_non_negative = _number(float, lambda v: v >= 0, "0 or more")
_positive_int = _number(int, lambda v: v >= 1, "a whole number of at least 1")
_non_negative_int = _number(int, lambda v: v >= 0, "a whole number, 0 or more")
_growth = _number(float, lambda v: -1 < v <= 10, "a fraction above -1 and at most 10 (0.10 is 10%/month)")
_months = _number(int, lambda v: 1 <= v <= 240, "a whole number from 1 to 240")
_volume = _number(float, lambda v: 0 < v <= 1e9, "above 0 and at most 1e9")
_hours = _number(float, lambda v: 0 < v <= 24, "between 0 and 24")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m app.ops.estimate", description=__doc__.splitlines()[0] if __doc__ else None)
    common = _Parser(add_help=False)
    common.add_argument("--region", default=DEFAULT_REGION, help="AWS region (default %(default)s)")
    common.add_argument(
        "--prices", type=Path, metavar="FILE", help="a prices file instead of the packaged app/ops/prices.json"
    )
    common.add_argument("--json", action="store_true", help="print JSON instead of the table")
    common.add_argument("--plot", type=Path, metavar="FILE.png", help="also draw a PNG (needs matplotlib)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{bucket,cost}")

    bucket = commands.add_parser("bucket", parents=[common], help="S3 bucket size and cost, month by month")
    bucket.add_argument("--users", type=_positive_int, required=True, metavar="N", help="users in month 1")
    bucket.add_argument("--uploads-per-user-per-day", type=_positive, required=True, metavar="R")
    bucket.add_argument(
        "--avg-image-kb",
        type=_positive,
        default=DEFAULT_AVG_IMAGE_KB,
        metavar="K",
        help=f"stored image size in kB (default {DEFAULT_AVG_IMAGE_KB}, measured: python -m bench.image_sizes)",
    )
    bucket.add_argument("--retention-days", type=_positive_int, required=True, metavar="D", help="lifecycle expiry")
    bucket.add_argument(
        "--monthly-growth", type=_growth, default=0.0, metavar="G", help="users' growth a month: 0.10 is 10%%"
    )
    bucket.add_argument("--months", type=_months, default=DEFAULT_MONTHS, metavar="M", help="default %(default)s")
    bucket.add_argument(
        "--gets-per-upload", type=_non_negative, default=0.0, metavar="N", help="image reads per upload (default 0)"
    )

    cost = commands.add_parser("cost", parents=[common], help="GPU and OpenAI cost, real-time vs async")
    cost.add_argument("--requests-per-day", type=_volume, required=True, metavar="N")
    cost.add_argument("--mode", choices=("realtime", "async"), default="realtime", help="default %(default)s")
    cost.add_argument("--instance", default=DEFAULT_INSTANCE, help="SageMaker instance type (default %(default)s)")
    cost.add_argument(
        "--instances", type=_positive_int, default=1, metavar="N", help="real-time instances, at least (default 1)"
    )
    cost.add_argument("--openai-model", default=DEFAULT_OPENAI_MODEL, metavar="M", help="default %(default)s")
    cost.add_argument(
        "--gpu-seconds-per-request",
        type=_positive,
        default=DEFAULT_GPU_SECONDS_PER_REQUEST,
        metavar="S",
        help="GPU time of one request (default %(default)s: ASSUMED, see the module docstring)",
    )
    cost.add_argument(
        "--scale-up-seconds",
        type=_non_negative,
        default=DEFAULT_SCALE_UP_SECONDS,
        metavar="S",
        help="async: billed start-up per burst (default %(default)s: ASSUMED)",
    )
    cost.add_argument(
        "--idle-tail-seconds",
        type=_non_negative,
        default=DEFAULT_IDLE_TAIL_SECONDS,
        metavar="S",
        help="async: idle time before scale-in (default %(default)s: ASSUMED)",
    )
    cost.add_argument(
        "--active-hours",
        type=_hours,
        default=24.0,
        metavar="H",
        help="hours a day the traffic spreads over (default %(default)s)",
    )
    cost.add_argument(
        "--input-tokens",
        type=_non_negative_int,
        default=DEFAULT_INPUT_TOKENS,
        metavar="N",
        help="OpenAI input tokens a request (default %(default)s: estimated)",
    )
    cost.add_argument(
        "--output-tokens",
        type=_non_negative_int,
        default=DEFAULT_OUTPUT_TOKENS,
        metavar="N",
        help="OpenAI output tokens a request (default %(default)s: estimated)",
    )
    return parser


def _prices_used(*entries: tuple[str, Price]) -> dict[str, Any]:
    return {name: price.model_dump(exclude_none=True) for name, price in entries}


def run_bucket(args: argparse.Namespace, book: PriceBook) -> tuple[list[str], dict[str, Any]]:
    region = book.region(args.region)
    inputs = BucketInputs(
        users=args.users,
        uploads_per_user_per_day=args.uploads_per_user_per_day,
        retention_days=args.retention_days,
        avg_image_kb=args.avg_image_kb,
        monthly_growth=args.monthly_growth,
        months=args.months,
        gets_per_upload=args.gets_per_upload,
    )
    estimate = estimate_bucket(inputs, region.s3_standard)
    s3 = region.s3_standard
    document = {
        "command": "bucket",
        "region": args.region,
        **asdict(estimate),
        "prices": _prices_used(
            ("s3_storage_per_gb_month", s3.storage_per_gb_month),
            ("s3_put_per_1000", s3.put_per_1000),
            ("s3_get_per_1000", s3.get_per_1000),
        ),
        "units": {
            "kb": BYTES_PER_KB,
            "gb": BYTES_PER_GB,
            "billed_gb": BYTES_PER_BILLED_GB,
            "month_days": DAYS_PER_MONTH,
        },
    }
    if args.plot:
        plot_bucket(
            estimate, args.plot, f"S3 bucket, {args.region}: {args.users:,} users, {args.retention_days}-day expiry"
        )
    return bucket_text(estimate, args.region, region), document


def run_cost(args: argparse.Namespace, book: PriceBook) -> tuple[list[str], dict[str, Any]]:
    instance, model = book.instance(args.region, args.instance), book.model(args.openai_model)
    inputs = CostInputs(
        requests_per_day=args.requests_per_day,
        mode=args.mode,
        instances=args.instances,
        gpu_seconds_per_request=args.gpu_seconds_per_request,
        scale_up_seconds=args.scale_up_seconds,
        idle_tail_seconds=args.idle_tail_seconds,
        active_hours=args.active_hours,
        input_tokens=args.input_tokens,
        output_tokens=args.output_tokens,
    )
    estimate = estimate_cost(inputs, instance, model)
    document = {
        "command": "cost",
        "region": args.region,
        "instance": args.instance,
        "openai_model": args.openai_model,
        **asdict(estimate),
        "selected": asdict(estimate.selected),
        "prices": _prices_used(
            ("realtime_per_hour", instance.realtime_per_hour),
            ("async_per_hour", instance.async_per_hour),
            ("openai_input_per_1m", model.input_per_1m),
            ("openai_output_per_1m", model.output_per_1m),
        ),
        "month_hours": HOURS_PER_MONTH,
    }
    document["async"] = document.pop("async_")
    if args.plot:
        plot_cost(estimate, instance, model, args.plot, f"{args.instance} in {args.region} + {args.openai_model}")
    return cost_text(estimate, args.region, args.instance, args.openai_model, book), document


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; 0 on success, 2 on bad input, 1 when the plot fails."""
    try:
        args = build_parser().parse_args(argv)
        book = load_prices(args.prices)
        run = run_bucket if args.command == "bucket" else run_cost
        lines, document = run(args, book)
    except UsageError as exc:
        print(f"estimate: error: {exc}", file=sys.stderr)
        return 2
    except PlotError as exc:
        print(f"estimate: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print("\n".join(lines))
    if args.plot:
        print(f"wrote {args.plot}", file=sys.stderr if args.json else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
