import base64
import io
import stat
import zipfile

import numpy as np
import pytest

from her2pcr.serving.requests import (
    Limits,
    RequestError,
    decode_base64,
    encode_tensors,
    read_tensors,
    read_zip,
)

LIMITS = Limits(max_payload_mb=1, max_uncompressed_mb=1, max_compression_ratio=20, max_files=3)


def zipped(members: dict[str, bytes], symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def noise(n: int) -> bytes:
    return np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8).tobytes()


def test_base64_checks_size_before_decoding_and_rejects_bad_text():
    assert decode_base64(base64.b64encode(b"abc").decode(), "f", 1) == b"abc"
    with pytest.raises(RequestError, match="over the limit of 1 MB"):
        decode_base64("A" * (2 * 1024 * 1024), "f", 1)
    with pytest.raises(RequestError, match="not valid base64"):
        decode_base64("ab$d", "f", 1)
    with pytest.raises(RequestError, match="non-empty base64 string, got int"):
        decode_base64(5, "f", 1)


def test_zip_members_are_read_into_memory_under_generated_names():
    files, names = read_zip(zipped({"a/b.dcm": noise(100), "c.dcm": noise(50)}), LIMITS)
    assert sorted(names.values()) == ["a/b.dcm", "c.dcm"] and names.keys() == files.keys()
    assert all(str(p).startswith("member") and len(p.parts) == 1 for p in files)
    assert {names[p]: data for p, data in files.items()} == {"a/b.dcm": noise(100), "c.dcm": noise(50)}


@pytest.mark.parametrize(("members", "message"), [
    ({"../x.dcm": b"1"}, "climbs out of the archive"),
    ({"a\\..\\..\\x.dcm": b"1"}, "climbs out of the archive"),
    ({"/etc/x.dcm": b"1"}, "absolute path"),
    ({"C:/x.dcm": b"1"}, "absolute path"),
    ({f"{k}.dcm": b"1" for k in range(4)}, "holds 4 files, over the limit of 3"),
    ({"big.dcm": noise(2 * 1024 * 1024)}, "expands to 2.0 MB, over the limit of 1 MB"),
    ({"zeros.dcm": bytes(500_000)}, "zip bomb"),
    ({}, "holds no files"),
])
def test_unsafe_or_oversized_zips_are_refused(members, message):
    with pytest.raises(RequestError, match=message.replace("(", r"\(")):
        read_zip(zipped(members), LIMITS)


def test_symbolic_links_and_non_zips_are_refused():
    with pytest.raises(RequestError, match="symbolic link"):
        read_zip(zipped({"a.dcm": b"1"}, symlink="link.dcm"), LIMITS)
    with pytest.raises(RequestError, match="not a zip archive"):
        read_zip(b"plain text", LIMITS)


def test_a_header_that_understates_the_size_is_caught_while_reading():
    data = bytearray(zipped({"a.dcm": bytes(200_000) + noise(200_000)}))
    # Forge the declared uncompressed size (central directory) down to 1000 bytes.
    central = data.rfind(b"PK\x01\x02")
    data[central + 24:central + 28] = (1000).to_bytes(4, "little")
    with pytest.raises(RequestError, match="cannot be read"):
        read_zip(bytes(data), LIMITS)


def stacks(n=2, dtype=np.float32):
    return np.random.default_rng(1).random((n, 8, 8, 3)).astype(dtype)


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_tensors_round_trip_and_ignore_extra_phases():
    encoded = encode_tensors({"pre": stacks(), "post3": stacks(), "post1": stacks()})
    out = read_tensors(base64.b64decode(encoded), ["pre", "post3"], 8, 3)
    assert list(out) == ["pre", "post3"] and out["pre"].dtype == np.float32
    np.testing.assert_array_equal(out["post3"], stacks())


@pytest.mark.parametrize(("arrays", "message"), [
    ({"pre": stacks()}, r"lack phase\(s\) \['post3'\]"),
    ({"pre": stacks()[:, :4], "post3": stacks()}, r"has shape \(2, 4, 8, 3\)"),
    ({"pre": stacks()[0], "post3": stacks()}, r"has shape \(8, 8, 3\)"),
    ({"pre": (stacks() * 9).astype(np.int16), "post3": stacks()}, "has dtype int16"),
    ({"pre": stacks() * 2, "post3": stacks()}, r"spans \[.*\]; preprocessed inputs lie in \[0, 1\]"),
    ({"pre": stacks(3), "post3": stacks(2)}, "different numbers of stacks"),
    ({"pre": np.full((1, 8, 8, 3), np.inf, np.float32), "post3": stacks(1)}, "NaN or infinite"),
])
def test_bad_tensors_are_refused_with_the_reason(arrays, message):
    with pytest.raises(RequestError, match=message):
        read_tensors(npz(**arrays), ["pre", "post3"], 8, 3)


def test_pickled_or_single_arrays_are_refused():
    with pytest.raises(RequestError, match="cannot be read"):
        read_tensors(npz(pre=np.array([{"a": 1}], dtype=object), post3=stacks()), ["pre", "post3"], 8, 3)
    single = io.BytesIO()
    np.save(single, stacks())
    with pytest.raises(RequestError, match="single array"):
        read_tensors(single.getvalue(), ["pre"], 8, 3)
    with pytest.raises(RequestError, match="not a NumPy .npz archive"):
        read_tensors(b"not numpy", ["pre"], 8, 3)
