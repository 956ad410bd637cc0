"""The streaming form reader and the field rules of app.api.uploads, without an app."""

from __future__ import annotations

import pytest

from app.api.uploads import (
    MAX_HEADER_TOTAL_BYTES,
    MAX_PARTS,
    MAX_TEXT_FIELD_BYTES,
    _FormReader,
    _options,
)
from app.config import MAX_CLIENT_QUESTIONS, MAX_HINTS_CHARS, MAX_QUESTION_CHARS
from app.domain.models import AnalysisOptions
from app.errors import ImageTooLarge, InvalidField, MalformedRequest
from tests.imagegen import BOUNDARY, Part, multipart

pytestmark = pytest.mark.unit

JPEG_BYTES = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40 + b"\xff\xd9"


def read(body: bytes, *, chunk: int = 65536, max_image_bytes: int = 1_000_000) -> _FormReader:
    reader = _FormReader(BOUNDARY.encode(), max_image_bytes=max_image_bytes)
    for i in range(0, len(body), chunk):
        reader.feed(body[i : i + chunk])
    return reader


def fields(**values: list[str]) -> dict[str, list[str]]:
    return {"questions": [], "locale": [], "hints": [], **values}


# The reader --------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 2, 7, 64, 65536])
def test_any_chunking_gives_the_same_form(chunk: int) -> None:
    body = multipart(
        [
            ("questions", b"What brand is it?"),
            ("image", JPEG_BYTES, "photo.jpg", "image/jpeg"),
            ("questions", "Où est-il fabriqué ?".encode()),
            ("locale", b"fr-CA"),
            ("hints", b"boxed, never used"),
        ]
    )
    reader = read(body, chunk=chunk)
    assert reader.finished
    assert reader.image == JPEG_BYTES
    assert reader.fields == {
        "questions": ["What brand is it?", "Où est-il fabriqué ?"],
        "locale": ["fr-CA"],
        "hints": ["boxed, never used"],
    }


def test_image_data_containing_boundary_lookalikes_survives() -> None:
    tricky = b"\r\n--" + BOUNDARY.encode()[:-1] + b"X\r\n" + JPEG_BYTES + b"\r\n--"
    reader = read(multipart([("image", tricky, "a.jpg", None)]), chunk=5)
    assert reader.image == tricky


def test_image_over_the_cap_stops_the_reader_at_once() -> None:
    body = multipart([("image", b"x" * 50_000, "a.jpg", "image/jpeg"), ("locale", b"en")])
    reader = _FormReader(BOUNDARY.encode(), max_image_bytes=10_000)
    fed = 0

    def feed_all() -> None:
        nonlocal fed
        for i in range(0, len(body), 1024):
            fed += 1024
            reader.feed(body[i : i + 1024])

    with pytest.raises(ImageTooLarge) as info:
        feed_all()
    assert info.value.status_code == 413
    assert fed <= 10_000 + 2 * 1024  # no more than the cap and the chunk that crossed it


def test_unknown_fields_are_ignored_and_unknown_files_discarded() -> None:
    reader = read(
        multipart(
            [
                ("image", JPEG_BYTES, "a.jpg", None),
                ("tracking", b"abc"),
                ("attachment", b"y" * 100_000, "big.bin", "application/octet-stream"),
            ]
        )
    )
    assert reader.finished
    assert reader.image == JPEG_BYTES
    assert reader.fields == fields()


def test_no_image_part_leaves_image_none() -> None:
    reader = read(multipart([("file", JPEG_BYTES, "photo.jpg", "image/jpeg")]))
    assert reader.finished
    assert reader.image is None


def test_empty_image_part_is_empty_not_none() -> None:
    reader = read(multipart([("image", b"", "", "application/octet-stream")]))
    assert reader.image == bytearray()


def test_two_image_parts_are_422() -> None:
    with pytest.raises(InvalidField, match="exactly one 'image'"):
        read(multipart([("image", JPEG_BYTES, "a.jpg", None), ("image", JPEG_BYTES, "b.jpg", None)]))


def test_too_many_questions_are_refused_when_the_part_starts() -> None:
    parts: list[Part] = [("questions", f"q{i}?".encode()) for i in range(MAX_CLIENT_QUESTIONS + 1)]
    with pytest.raises(InvalidField, match=f"at most {MAX_CLIENT_QUESTIONS} 'questions'"):
        read(multipart(parts))


@pytest.mark.parametrize("name", ["locale", "hints"])
def test_single_valued_fields_at_most_once(name: str) -> None:
    with pytest.raises(InvalidField, match=name):
        read(multipart([(name, b"en"), (name, b"fr")]))


@pytest.mark.parametrize("name", ["questions", "hints", "locale"])
def test_text_field_byte_cap_names_the_field(name: str) -> None:
    with pytest.raises(InvalidField, match=f"'{name}' is too long"):
        read(multipart([(name, b"a" * (MAX_TEXT_FIELD_BYTES + 1))]))


def test_unknown_text_fields_count_toward_the_caps() -> None:
    with pytest.raises(InvalidField, match="A form field is too long"):
        read(multipart([("notes", b"a" * (MAX_TEXT_FIELD_BYTES + 1))]))
    many: list[Part] = [(f"f{i}", b"a" * (MAX_TEXT_FIELD_BYTES - 10)) for i in range(MAX_PARTS - 1)]
    with pytest.raises(InvalidField, match="too long"):
        read(multipart(many))


def test_invalid_utf8_is_422() -> None:
    with pytest.raises(InvalidField, match="'hints' is not valid UTF-8"):
        read(multipart([("hints", b"\xff\xfe caf\xe9")]))


def test_too_many_parts_is_400() -> None:
    parts: list[Part] = [(f"f{i}", b"x") for i in range(MAX_PARTS + 1)]
    with pytest.raises(MalformedRequest, match="parts"):
        read(multipart(parts))


def test_part_headers_are_capped_in_total() -> None:
    # Each part: 7 legal-size header lines; together they pass the total cap.
    boundary = BOUNDARY.encode()
    head = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"v" * 1000) for i in range(7))
    body = b"".join(
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="f%d"\r\n' % n + head + b"\r\nx\r\n"
        for n in range(MAX_HEADER_TOTAL_BYTES // 7000 + 2)
    )
    with pytest.raises(MalformedRequest, match="headers are too large"):
        read(body + b"--" + boundary + b"--\r\n")


def test_one_huge_header_line_is_400() -> None:
    body = multipart([("locale", b"en")]).replace(
        b"Content-Disposition", b"X-Big: " + b"a" * 10_000 + b"\r\nContent-Disposition", 1
    )
    with pytest.raises(MalformedRequest):
        read(body)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"not multipart at all", id="garbage"),
        pytest.param(b'--wrong-boundary\r\nContent-Disposition: form-data; name="a"\r\n\r\nx\r\n', id="wrong-boundary"),
        pytest.param(f"--{BOUNDARY}\r\nBad Header: x\r\n\r\nx\r\n".encode(), id="bad-header-name"),
        pytest.param(f"--{BOUNDARY}\r\nX-Other: x\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode(), id="no-disposition"),
        pytest.param(f"--{BOUNDARY}\r\nContent-Disposition: attachment\r\n\r\nx\r\n".encode(), id="not-form-data"),
        pytest.param(f"--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\nx\r\n".encode(), id="no-name"),
    ],
)
def test_broken_multipart_is_400(body: bytes) -> None:
    with pytest.raises(MalformedRequest):
        read(body)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(multipart([("image", JPEG_BYTES, "a.jpg", None)])[:-200], id="cut-in-data"),
        pytest.param(multipart([("image", JPEG_BYTES, "a.jpg", None)])[:-4], id="cut-in-closing-boundary"),
        pytest.param(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="a"\nx'.encode(), id="bare-lf"),
        pytest.param(b"\r\n\r\n", id="only-newlines"),
    ],
)
def test_body_without_closing_boundary_is_not_finished(body: bytes) -> None:
    assert not read(body).finished


def test_overlong_boundary_is_400() -> None:
    with pytest.raises(MalformedRequest):
        _FormReader(b"b" * 1000, max_image_bytes=10)


# The field rules ---------------------------------------------------------------------------


def test_defaults() -> None:
    assert _options(fields()) == AnalysisOptions(questions=(), locale="en", hints=None)


def test_values_are_stripped() -> None:
    options = _options(fields(questions=["  What size?  ", "Colour?\n"], locale=[" fr-CA "], hints=["  mint  "]))
    assert options == AnalysisOptions(questions=("What size?", "Colour?"), locale="fr-CA", hints="mint")


def test_blank_locale_and_hints_mean_absent() -> None:
    assert _options(fields(locale=["  "], hints=[""])) == AnalysisOptions()


@pytest.mark.parametrize("question", ["", "   ", "x" * (MAX_QUESTION_CHARS + 1)])
def test_bad_questions(question: str) -> None:
    with pytest.raises(InvalidField, match="'questions'"):
        _options(fields(questions=["fine?", question]))


def test_question_length_counts_characters_not_bytes() -> None:
    question = "é" * MAX_QUESTION_CHARS  # 400 bytes, 200 characters
    assert _options(fields(questions=[question])).questions == (question,)


def test_hints_length() -> None:
    assert _options(fields(hints=["h" * MAX_HINTS_CHARS])).hints == "h" * MAX_HINTS_CHARS
    with pytest.raises(InvalidField, match="'hints'"):
        _options(fields(hints=["h" * (MAX_HINTS_CHARS + 1)]))


@pytest.mark.parametrize("locale", ["en", "fr-CA", "zh-Hant-TW", "es-419", "gsw", "sr-Latn-RS-x1", "en_US"])
def test_good_locales(locale: str) -> None:
    assert _options(fields(locale=[locale])).locale == locale


@pytest.mark.parametrize(
    "locale", ["e", "english", "en-", "fr-CA-x-y-z", "../etc", "en\nfr", "ïn", "en-CA-toolongsubtag"]
)
def test_bad_locales(locale: str) -> None:
    with pytest.raises(InvalidField, match="'locale'"):
        _options(fields(locale=[locale]))
