"""Fast tests of the preprocess stage's parts: file ranges, headers, BigQuery wiring, runner choice."""
import json

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf
from apache_beam.options.pipeline_options import DirectOptions, StandardOptions, TypeOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from stagekit import beam_runner, columnar
from pipeline.preprocess import examples
from pipeline import preprocess
from pipeline.sources import interactions, read, sql, textio
from transforms import preprocessing as pp
from tests.preprocess_fixtures import stage_args


@pytest.mark.parametrize("range_bytes", [1, 7, 64, 10_000])
def test_line_ranges_read_every_line_exactly_once(tmp_path, range_bytes):
    lines = ["header", "a", "", "bb,1", "c" * 40, "d\r", "é,ü", "last-without-newline"]
    path = tmp_path / "f.txt"
    path.write_bytes("\n".join(lines).encode())
    expected = [line.rstrip("\r").encode() for line in lines[1:]]
    with beam.Pipeline(runner=FnApiRunner()) as p:
        got = (p | textio.ReadLineBatches(str(path), skip_header_lines=1, range_bytes=range_bytes,
                                          lines_per_batch=2)
               | beam.FlatMap(lambda batch: batch))
        assert_that(got, equal_to(expected))


def test_parse_header_detects_delimiter_and_columns():
    h = interactions.parse_header("\ufeffts\titem_id\tUser_Id\trating\r\n")
    assert (h.delimiter, h.user_col, h.item_col, h.rating_col, h.num_columns) == ("\t", 2, 1, 3, 4)
    h = interactions.parse_header("user_id,item_id,rating")
    assert (h.delimiter, h.num_columns) == (",", 3)
    with pytest.raises(ValueError, match="rating"):
        interactions.parse_header("user_id,item_id,score")


def test_interactions_fast_and_row_by_row_paths_agree():
    header = interactions.parse_header("user_id,item_id,rating")
    parser = interactions.InteractionsParser(header)
    clean = [b"u1,i1,3", b"u 2,i2,0.5", b"u3,i1,1e2"]
    fast = parser._clean_batch(clean)
    slow = parser._row_by_row(clean)
    assert fast is not None and fast.rows.equals(slow.rows) and not fast.rejects
    quoted = clean + [b'"u4","i ""4""",1']  # quotes wrapping whole fields: both parsers agree
    assert parser._clean_batch(quoted).rows.equals(parser._row_by_row(quoted).rows)
    assert parser._clean_batch(clean + [b'"u4"x,i4,1']) is None  # odd quoting: the csv module only
    assert parser._clean_batch(clean + [b"u4,i1,-1"]) is None  # any bad row -> exact path
    parsed = parser(clean + [b"u4,i1,-1"])
    assert parsed.input_rows == 4 and parsed.rejects == [("u4,i1,-1", "rating_negative")]


@pytest.mark.parametrize("delimiter", [",", "\t"])
def test_ids_holding_a_prediction_file_separator_are_rejected(delimiter):
    # text outputs are id<TAB>id1,id2,... on both sides: no comma, TAB or line break in any id
    parser = interactions.InteractionsParser(interactions.parse_header(f"user_id{delimiter}item_id{delimiter}rating"))

    def line(user, item):
        return delimiter.join(f'"{field}"' for field in (user, item, "1")).encode()

    good = [line("u 1;x", "i 1;x"), line("u|2", "i 2")]
    bad = {line("u\t3", "i1"): "separator_in_user_id", line("u\r4", "i1"): "separator_in_user_id",
           line("u,8", "i1"): "separator_in_user_id", line("u9", "i\u20289"): "separator_in_item_id",
           line("u5", "i,5"): "separator_in_item_id", line("u6", "i\t6"): "separator_in_item_id",
           line("u7", "i\r7"): "separator_in_item_id"}
    for row, reason in bad.items():
        assert parser._clean_batch(good + [row]) is None  # the fast path never accepts one
        parsed = parser(good + [row])
        assert parsed.rejects == [(row.decode(), reason)] and parsed.rows.num_rows == 2
        assert parsed.rows.column("visitorId").to_pylist() == [b"u 1;x", b"u|2"]
    unquoted = [b"u1,i1,1", b"u2,i2,2"] if delimiter == "," else [b"u1\ti1\t1", b"u2\ti2\t2"]
    assert parser._clean_batch(unquoted) is not None  # the fast path still serves plain files


def test_bigquery_source_runs_the_validated_preset_query(tmp_path):
    args = stage_args(tmp_path, "--source", "bigquery", "--table", "my-project.my_dataset.ga_sessions_*",
                      "--ga_preset", "news", "--start_date", "20240101", "--end_date", "20240131")
    transform = read.source_transform(args)
    assert isinstance(transform, read.ReadBigQuery)
    assert transform.query == sql.build_query("news", "my-project.my_dataset.ga_sessions_*", start_date="20240101",
                                              end_date="20240131")
    with pytest.raises(ValueError):
        read.source_transform(stage_args(tmp_path, "--source", "bigquery",
                                             "--table", "my-project.ds.t`; DROP TABLE x; --"))


def test_bigquery_rows_are_checked():
    parsed = read._parse_bigquery_rows([
        {"visitorId": "v1", "contentId": "c1", "value": 12.0},
        {"visitorId": "v1", "contentId": "", "value": 1.0},
        {"visitorId": "v2", "contentId": "c1", "value": 0},
        {"visitorId": "v2"},
        {"visitorId": "v\t3", "contentId": "c1", "value": 1.0},
        {"visitorId": "v 4", "contentId": "c\n1", "value": 1.0},
        {"visitorId": "v 4", "contentId": "c1", "value": 2.0},
        {"visitorId": "v,5", "contentId": "c1", "value": 2.0}])
    assert parsed.rows.num_rows == 2 and parsed.input_rows == 8
    assert parsed.rows.column("visitorId").to_pylist() == [b"v1", b"v 4"]
    assert [reason for _, reason in parsed.rejects] == [
        "empty_item_id", "non_positive_value", "malformed_bigquery_row", "separator_in_user_id",
        "separator_in_item_id", "separator_in_user_id"]


def test_local_runner_defaults():
    options = beam_runner.pipeline_options([])
    assert isinstance(beam_runner.runner_for(options), FnApiRunner)  # never the Prism download
    assert options.view_as(DirectOptions).direct_running_mode == "in_memory"
    big = beam_runner.pipeline_options([], input_size=beam_runner.MULTI_PROCESSING_MIN_BYTES)
    assert big.view_as(DirectOptions).direct_running_mode == "multi_processing"
    assert big.view_as(DirectOptions).direct_num_workers == 2
    pinned = beam_runner.pipeline_options(["--direct_running_mode=in_memory"], input_size=10**12)
    assert pinned.view_as(DirectOptions).direct_running_mode == "in_memory"
    dataflow = beam_runner.pipeline_options(["--runner=DataflowRunner", "--project=p"], input_size=10**12)
    assert dataflow.view_as(StandardOptions).runner == "DataflowRunner"
    assert beam_runner.runner_for(dataflow) is None
    # construction-time type checks are skipped locally unless asked for; Dataflow keeps them
    assert not options.view_as(TypeOptions).pipeline_type_check
    assert beam_runner.pipeline_options(["--pipeline_type_check"]).view_as(TypeOptions).pipeline_type_check
    assert dataflow.view_as(TypeOptions).pipeline_type_check
    with pytest.raises(ValueError, match="multi_threading"):
        beam_runner.pipeline_options(["--direct_running_mode=multi_threading"])


def test_streamed_stage_inputs_lose_and_repeat_nothing():
    # ~30 MB of 100 kB elements: the producer flushes every ~10 MB, so the shuffled and the
    # materialised inputs reach the next stages as several chunks, each handed over on its own.
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.testing.util import assert_that, equal_to

    original = fn_runner.BundleManager._send_input_to_worker
    with beam_runner.streamed_stage_inputs():
        assert fn_runner.BundleManager._send_input_to_worker is not original
        with beam.Pipeline(runner=FnApiRunner()) as pipeline:
            blobs = (pipeline | beam.Create(range(300)) | beam.Reshuffle()
                     | beam.Map(lambda n: (n % 7, bytes([n % 251]) * 100_000)))
            sums = (blobs | beam.GroupByKey()
                    | beam.MapTuple(lambda key, values: (key, sorted(v[0] for v in values))))
            total = blobs | beam.Map(lambda kv: len(kv[1])) | beam.CombineGlobally(sum)
            assert_that(sums, equal_to([(k, sorted(n % 251 for n in range(300) if n % 7 == k))
                                        for k in range(7)]), label="grouped")
            assert_that(total, equal_to([300 * 100_000]), label="total")
    assert fn_runner.BundleManager._send_input_to_worker is original


@pytest.mark.parametrize("median", [1.0, 3.0, 64201.0, 0.0123, 35000.0])
def test_learned_median_is_read_back_exactly(median):
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.uniform(0, 4 * median, 300), [median, 10 * median]])
    m32 = np.float32(median)
    # TFT's float32 arithmetic: min(fl(fl(scale * value) / median), 1)
    ratings = np.minimum(np.float32(0.3) * values.astype(np.float32) / m32, np.float32(1))
    assert pp.learned_median(values, ratings, 0.3) == float(m32)
    assert pp.learned_median(values[-1:], ratings[-1:], 0.3) is None  # clamped only: unknown


def test_serialized_examples_decode_to_each_keys_sorted_row():
    rng = np.random.default_rng(5)
    pairs = {(int(k), int(i)) for k, i in zip(rng.integers(0, 40, 600), rng.integers(0, 2**40, 600))}
    pairs |= {(2**35, 0), (7, 127), (7, 128), (7, 16383), (7, 16384)}  # varint size boundaries
    keys, indices = (np.array(side, np.int64) for side in zip(*sorted(pairs, key=lambda p: -p[1])))
    values = rng.uniform(0, 1, len(keys)).astype(np.float32)
    records = examples.serialized_examples(keys, indices, values)
    expected = {}
    for key, index, value in sorted(zip(keys.tolist(), indices.tolist(), values.tolist())):
        expected.setdefault(key, ([], []))
        expected[key][0].append(index)
        expected[key][1].append(value)
    assert len(records) == len(expected)
    for record in records:
        example = tf.train.Example.FromString(record)
        key = example.features.feature["key"].int64_list.value
        assert len(key) == 1
        reference = tf.train.Example()  # the same content through the protobuf API
        reference.features.feature["key"].int64_list.value.append(key[0])
        reference.features.feature["indices"].int64_list.value.extend(expected[key[0]][0])
        reference.features.feature["values"].float_list.value.extend(expected[key[0]][1])
        assert example == reference
    assert examples.serialized_examples(np.array([], np.int64), np.array([], np.int64),
                                          np.array([], np.float32)) == []


def test_serialized_examples_keep_input_order_of_a_repeated_pair():
    # The fast sort is not stable; a repeated (key, index) must still keep its values in input
    # order, so the bytes never depend on the sort.
    rng = np.random.default_rng(9)
    keys, indices = rng.integers(0, 5, 400), rng.integers(0, 6, 400)  # many repeats
    values = np.arange(400, dtype=np.float32)
    order = np.lexsort((indices, keys))  # stable: ties in input order
    records = examples.serialized_examples(keys, indices, values)
    for record, key in zip(records, np.unique(keys)):
        rows = order[keys[order] == key]
        example = tf.train.Example.FromString(record)
        assert example.features.feature["key"].int64_list.value == [key]
        assert list(example.features.feature["indices"].int64_list.value) == indices[rows].tolist()
        assert list(example.features.feature["values"].float_list.value) == values[rows].tolist()


def test_id_shards_are_stable_per_id_and_in_range():
    ids = [f"visitor-{n % 97}".encode() for n in range(1000)] + [b"", "é".encode()]
    array = pa.array(ids, pa.binary())
    shards = columnar.id_shards(array, 8)
    assert shards.min() >= 0 and shards.max() < 8 and len(set(shards.tolist())) == 8
    by_id = {}
    for id_, shard in zip(ids, shards.tolist()):
        assert by_id.setdefault(id_, shard) == shard  # one id, one shard
    sliced = columnar.id_shards(array.slice(500, 300), 8)  # a slice hashes its own bytes only
    assert sliced.tolist() == shards[500:800].tolist()


@pytest.fixture
def no_google_credentials(tmp_path, monkeypatch):
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # no gcloud login here
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # not on GCE: do not probe the metadata server
    return tmp_path


def test_bigquery_source_fails_fast_with_what_is_missing(no_google_credentials, monkeypatch):
    tmp = no_google_credentials
    argv = ["--source", "bigquery", "--table", "my-project.123456789.ga_sessions_*"]
    for beam_argv, message in (([], "--temp_location=gs://"),
                               (["--temp_location=/tmp/x"], "--temp_location=gs://"),
                               (["--temp_location=gs://b/tmp"], "needs Google Cloud credentials"),
                               # Dataflow finds a temp location itself (staging or default bucket)
                               (["--runner=DataflowRunner"], "needs Google Cloud credentials")):
        with pytest.raises(ValueError, match=message):
            preprocess.run(stage_args(tmp / "out", *argv), beam_argv)
    assert not (tmp / "out").exists()  # refused before touching the output
    # credentials without a project: the query job needs one
    key = tmp / "user.json"
    key.write_text(json.dumps({"type": "authorized_user", "client_id": "c", "client_secret": "s",
                               "refresh_token": "r"}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    options = beam_runner.pipeline_options(["--temp_location=gs://b/tmp"])
    with pytest.raises(ValueError, match="--project=PROJECT"):
        sql.check_bigquery_ready(options)
    sql.check_bigquery_ready(beam_runner.pipeline_options(["--temp_location=gs://b/tmp",
                                                               "--project=my-project"]))
