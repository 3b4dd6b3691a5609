"""Flex Template: metadata.json == the driver's options, Dockerfile and `make template` wiring."""
import argparse
import json
import os
import re
import subprocess
import sys

import apache_beam
import pytest

from pipeline.cloud import flex_template

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METADATA = os.path.join(ROOT, "template", "metadata.json")


@pytest.fixture(scope="module")
def parser():
    try:
        from pipeline.run import build_parser
        return build_parser()
    except ModuleNotFoundError as exc:  # a stage module not written yet
        pytest.skip(f"driver parser needs every stage module: {exc}")


@pytest.fixture(scope="module")
def committed():
    with open(METADATA) as f:
        return json.load(f)


def test_parameters_are_exactly_the_driver_options(parser, committed):
    options = [a.dest for a in parser._actions if a.option_strings and a.dest != "help"]
    names = [p["name"] for p in committed["parameters"]]
    assert len(names) == len(set(names))
    assert names == options, "run: python -m pipeline.cloud.flex_template --write template/metadata.json"
    assert not {"runner", "project", "region", "temp_location"} & set(names)  # Beam's, not ours


def test_committed_file_is_what_the_generator_writes(parser):
    with open(METADATA) as f:
        assert f.read() == flex_template.render(flex_template.build_metadata(parser))


def test_every_parameter_is_documented_and_validated(parser, committed):
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    for param in committed["parameters"]:
        action = actions[param["name"]]
        assert param["label"] and isinstance(param["isOptional"], bool)
        assert len(param["helpText"]) > 15 and param["helpText"] != param["name"], param
        (regex,) = param["regexes"]
        pattern = re.compile(regex)
        for choice in action.choices or []:
            assert pattern.match(str(choice)), (param["name"], choice)
        default = action.default
        if param["name"] in ("output_dir", "input"):
            continue  # the template wants gs:// where the local default is a path
        if isinstance(action, argparse._StoreTrueAction):
            default = "false"
        elif isinstance(default, list):
            default = ",".join(default)
        if default is not None:
            assert pattern.match(str(default)), (param["name"], default, regex)
    required = [p["name"] for p in committed["parameters"] if not p["isOptional"]]
    assert required == ["output_dir"]


@pytest.mark.parametrize("name, good, bad", [
    ("stages", ["preprocess", "preprocess,train,predict"], ["serve", "train;rm -rf /", ""]),
    ("start_date", ["20240131", "today-7", "yesterday"], ["2024-01-31", "today+1", "now"]),
    ("output_dir", ["gs://my-bucket/runs/nightly"], ["/tmp/out", "gs://", "s3://b/x"]),
    ("top_k", ["10"], ["ten", "1.5"]),
    ("overwrite", ["true", "false"], ["yes"]),
])
def test_regexes_accept_valid_and_refuse_invalid_values(committed, name, good, bad):
    (regex,) = next(p["regexes"] for p in committed["parameters"] if p["name"] == name)
    assert all(re.match(regex, v) for v in good)
    assert not any(re.match(regex, v) for v in bad)


def test_dockerfile_builds_on_the_launcher_and_matching_beam_sdk_image():
    with open(os.path.join(ROOT, "Dockerfile")) as f:
        dockerfile = f.read()
    froms = re.findall(r"^FROM (\S+)", dockerfile, re.M)
    assert froms == ["gcr.io/dataflow-templates-base/python311-template-launcher-base",
                     f"apache/beam_python3.11_sdk:{apache_beam.__version__}"]
    env = dict(re.findall(r'^ENV (FLEX_TEMPLATE_PYTHON_\w+)="\$\{WORKDIR\}/([^"]+)"', dockerfile, re.M))
    assert set(env) == {"FLEX_TEMPLATE_PYTHON_PY_FILE", "FLEX_TEMPLATE_PYTHON_SETUP_FILE"}
    for path in env.values():
        assert os.path.isfile(os.path.join(ROOT, path)), path
        assert re.search(rf"^COPY .*{re.escape(path)}", dockerfile, re.M) or \
            re.search(rf"^COPY {path.split('/')[0]} ", dockerfile, re.M), f"{path} not copied"


def test_make_template_builds_the_image_and_the_spec_with_this_metadata():
    out = subprocess.run(["make", "-n", "template", "PROJECT=p", "REGION=europe-west1", "BUCKET=b"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "pipeline.cloud.flex_template --check template/metadata.json" in out
    assert "gcloud builds submit --project=p --region=europe-west1 " \
           "--tag=europe-west1-docker.pkg.dev/p/ga-wals/ga-wals:latest ." in out
    assert re.search(r"gcloud dataflow flex-template build gs://b/templates/ga-wals.json .*"
                     r"--sdk-language=PYTHON --metadata-file=template/metadata.json", out.replace("\\\n", ""))


def test_template_entry_point_runs_the_driver_with_launcher_style_flags(tmp_path):
    """The launcher passes --name=value for every parameter, booleans included."""
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "template", "main.py"), "--stages=train",
         f"--output_dir={tmp_path / 'run'}", "--overwrite=false", "--no_report=true"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "preproc/metadata.json" in result.stderr and "'preprocess' stage" in result.stderr
    assert not (tmp_path / "run").exists()
