"""What the nightly tests share: where schedule/ and the orchestrate venv are, and the plan module
loaded from its file (it ships as a kfp component's source, so it is not imported as a package)."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEDULE = os.path.join(ROOT, "schedule")
ORCHESTRATE_PYTHON = os.environ.get("GA_WALS_ORCHESTRATE_PYTHON") or os.path.join(
    ROOT, ".venv-orchestrate", "bin", "python")
IMAGE = "europe-west1-docker.pkg.dev/my-proj/ga-wals/ga-wals:v1"


def plan_module():
    spec = importlib.util.spec_from_file_location("nightly_plan", os.path.join(SCHEDULE, "nightly_plan.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
