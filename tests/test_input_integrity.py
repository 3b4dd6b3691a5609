"""Input integrity: every file is read whole or the run fails naming it; CSV records are what the
CSV standard says, whatever batch they land in; a fragment of a record never becomes a row."""
import bz2
import gzip
import lzma

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from tensorflow_transform import TFTransformOutput

from pipeline.sources import interactions
from pipeline.sources.textio import InputFileError, ReadLineBatches
from preprocess_fixtures import read_rejects, run_stage

LINES = [f"line {i:05d} " + "x" * (i % 37) for i in range(3000)]


_COLLECTED: list = []


def _collect(batch):  # module level: pickled by reference, so it appends in this process
    _COLLECTED.extend(batch)


def _read_all(pattern: str, **kwargs) -> list[bytes]:
    _COLLECTED.clear()
    with beam.Pipeline(runner=FnApiRunner()) as p:
        _ = p | ReadLineBatches(pattern, lines_per_batch=128, **kwargs) | beam.Map(_collect)
    return list(_COLLECTED)


def _data() -> bytes:
    return "".join(line + "\n" for line in LINES).encode()


@pytest.mark.parametrize("suffix, compress", [
    (".gz", gzip.compress), (".bz2", bz2.compress), (".xz", lzma.compress),
    (".gz", lambda d: gzip.compress(d[:5000]) + gzip.compress(d[5000:])),  # cat a.gz b.gz
])
def test_compressed_files_are_read_whole(tmp_path, suffix, compress):
    path = tmp_path / f"in{suffix}"
    path.write_bytes(compress(_data()))
    assert sorted(_read_all(str(path))) == sorted(line.encode() for line in LINES)


@pytest.mark.parametrize("suffix, compress", [(".gz", gzip.compress), (".bz2", bz2.compress),
                                              (".xz", lzma.compress)])
def test_a_truncated_compressed_file_fails_naming_it(tmp_path, suffix, compress):
    whole = compress(_data())
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(whole[: len(whole) // 3])
    with pytest.raises(Exception, match=rf"{path}: truncated .* end-of-stream marker"):
        _read_all(str(path))


def test_a_file_that_is_not_what_its_name_says_fails_naming_it(tmp_path):
    path = tmp_path / "plain.gz"
    path.write_bytes(_data())
    with pytest.raises(Exception, match=rf"{path}: corrupt gzip data"):
        _read_all(str(path))


def _interactions(tmp_path, body: str, name="r.csv") -> str:
    path = tmp_path / name
    path.write_text("user_id,item_id,rating\n" + body)
    return str(path)


def test_a_truncated_ratings_file_publishes_nothing(tmp_path):
    text = "user_id,item_id,rating\n" + "".join(f"u{i % 50},i{i % 20},{1 + i % 5}\n" for i in range(5000))
    whole = gzip.compress(text.encode())
    (tmp_path / "r.csv.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(Exception, match="r.csv.gz: truncated gzip data"):
        run_stage(tmp_path / "out", "--source", "interactions", "--input", str(tmp_path / "r.csv.gz"))
    assert not (tmp_path / "out" / "preproc").exists()


def test_a_ratings_file_that_is_not_gzip_fails_naming_it(tmp_path):
    (tmp_path / "r.csv.gz").write_bytes(b"user_id,item_id,rating\nu1,i1,3\n")
    with pytest.raises(InputFileError, match="r.csv.gz: cannot read its header"):
        run_stage(tmp_path / "out", "--source", "interactions", "--input", str(tmp_path / "r.csv.gz"))


def test_quoted_multiline_fields_are_one_record_never_fragments(tmp_path):
    body = ('u1,i1,3\n'
            'u2,"item\nspanning lines",4\n'        # a newline inside quotes: one record, rejected
            '"u3","i3",5\n'                          # ordinary quoting: accepted as u3, i3
            'u4,"i4, with comma",2\n'                # a separator in an id: rejected
            '"u5\n""quoted""\nthird line",i5,1\n'    # three lines, escaped quotes: one record
            'u6,i6,2\n'
            'u7,"never closed,1\n'                    # unclosed at EOF: a stray quote, rejected
            'u8,i8,1\n')                             # ... and the line after it still read
    metadata = run_stage(tmp_path / "out", "--source", "interactions",
                         "--input", _interactions(tmp_path, body), "--max_rejected_fraction", "1")
    assert metadata["input_rows"] == 8  # records, as a CSV reader counts them
    assert metadata["accepted_rows"] == 4 and metadata["rejected_rows"] == 4
    rejects = read_rejects(str(tmp_path / "out" / "preproc"))
    assert sorted(r["reason"] for r in rejects) == [
        "malformed_quoting", "separator_in_item_id", "separator_in_item_id", "separator_in_user_id"]
    assert 'u2,"item\nspanning lines",4' in [r["raw"] for r in rejects]  # rejected whole
    users = {u.decode() for u in TFTransformOutput(str(tmp_path / "out" / "preproc"))
             .vocabulary_by_name("vocab_users")}
    assert users == {"u1", "u3", "u6", "u8"}


def test_a_stray_quote_never_swallows_the_rows_after_it(tmp_path):
    rows = [f"u{i},i{i % 7},{1 + i % 3}" for i in range(300)]
    body = "\n".join(rows[:100] + ['u-stray,"i1,2'] + rows[100:150] + ['u-literal,i"1,2']
                     + rows[150:]) + "\n"
    metadata = run_stage(tmp_path / "out", "--source", "interactions",
                         "--input", _interactions(tmp_path, body))
    # the stray opening quote is rejected; a quote inside an unquoted field is a literal
    assert (metadata["input_rows"], metadata["accepted_rows"], metadata["rejected_rows"]) == (302, 301, 1)
    assert [r["reason"] for r in read_rejects(str(tmp_path / "out" / "preproc"))] == ["malformed_quoting"]


ODD_ROWS = ['u1,a"b,3', 'u1,"i1"x,3', 'u1,"i1" ,3', '"u1"u,i1,3', 'u2,"i2",4', 'u3, i3 ,5', 'u4,i4, 2 ', '"u5",i5,"1"', 'u6,i6,1_000',
            'u7,i7,0x10', 'u8,"i""8",2', 'u9,i9,1e400', 'u10,i10,-0', 'u11,i11,', ',i12,1']


@pytest.mark.parametrize("row", ODD_ROWS)
def test_a_rows_fate_does_not_depend_on_its_batch(row):
    parse = interactions.InteractionsParser(interactions.parse_header("user_id,item_id,rating"))
    clean = [f"c{i},d{i},{i}".encode() for i in range(20)]

    def outcome(batch):
        parsed = parse(batch)
        for raw, reason in parsed.rejects:
            if (raw.decode() if isinstance(raw, bytes) else raw) == row:
                return ("rejected", reason)
        rows = zip(*(parsed.rows.column(i).to_pylist() for i in range(3)))
        return ("accepted", [r for r in rows if not r[0].startswith((b"c", b"bad"))])

    alone = outcome([row.encode()])
    among_clean = outcome(clean[:10] + [row.encode()] + clean[10:])
    among_bad = outcome([b"bad,row"] + clean + [row.encode()])
    assert alone == among_clean == among_bad, (row, alone, among_clean, among_bad)


@pytest.mark.parametrize("kind, compress", [("bzip2", bz2.compress), ("lzma", lzma.compress),
                                            ("gzip", gzip.compress)])
def test_multi_stream_files_whatever_the_read_boundaries(tmp_path, kind, compress):
    from pipeline.sources import textio
    data = _data()
    first = compress(data[:5000])
    path = tmp_path / "multi"
    path.write_bytes(first + compress(data[5000:]))
    for block_bytes in (1, 7, len(first), len(first) + 1, 1 << 20):  # a stream ending on a read
        assert b"".join(textio._checked_blocks(str(path), kind, block_bytes)) == data, block_bytes


def test_gzip_padding_is_ignored_and_empty_or_broken_files_fail_naming_them(tmp_path):
    import zstandard

    from pipeline.sources import textio
    (tmp_path / "padded.gz").write_bytes(gzip.compress(_data()) + b"\0" * 1000)
    assert sorted(_read_all(str(tmp_path / "padded.gz"))) == sorted(line.encode() for line in LINES)
    (tmp_path / "empty.gz").write_bytes(b"")
    with pytest.raises(Exception, match="empty.gz: truncated gzip"):
        _read_all(str(tmp_path / "empty.gz"))
    (tmp_path / "bad.zst").write_bytes(b"not zstd" * 20)
    with pytest.raises(textio.InputFileError, match="bad.zst: corrupt zstd data"):
        list(textio._checked_blocks(str(tmp_path / "bad.zst"), "zstd", 64))
    whole = zstandard.ZstdCompressor().compress(_data())
    (tmp_path / "cut.zst").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(textio.InputFileError, match="cut.zst: truncated zstd"):
        list(textio._checked_blocks(str(tmp_path / "cut.zst"), "zstd", 64))
