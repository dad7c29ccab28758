"""deploy/kubernetes, rendered and checked without a cluster.

Each overlay is rendered by kustomize (the one inside kubectl, what `kubectl apply -k` runs).
Built-in kinds are validated by ``kubernetes-validate`` (the Kubernetes API's JSON schemas,
from PyPI, strict: an unknown field fails); KEDA's kinds against the CRD schemas committed in
deploy/kubernetes/schemas/ (made strict here the same way) and the fields KEDA's postgresql
scaler reads. Then the parts must agree with the code: every ScaledObject carries exactly the
query ``gouache scaling-query`` prints for its Deployment's model group and images per worker,
every ``GOUACHE_*`` variable is a setting, every secret file is a key of the one Secret.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from gouache.cli import build_parser
from gouache.config import Settings
from gouache.storage.scaling import scaling_query

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "kubernetes"
SCHEMAS = K8S / "schemas"
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
KUBERNETES_VERSION = "1.30.0"  # the oldest release the manifests promise (docs/deploy.md)
SECRET_KEYS = {"database-url", "keda-connection", "discord-token", "slack-bot-token",
               "slack-signing-secret", "slack-app-token", "web-token"}  # fmt: skip


def render(path: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with its built-in kustomize) renders deploy/kubernetes: install it"
    done = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def _strict(schema: Any) -> Any:
    """additionalProperties: false wherever an object lists its properties (kubeconform --strict)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


KEDA = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda-triggerauthentication-v1alpha1.json",
}


def validate(doc: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` (KEDA) or kubernetes-validate's error (built-in)."""
    name = KEDA.get((doc.get("apiVersion"), doc.get("kind")))
    if name is None:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        return
    jsonschema.validate(doc, _strict(json.loads((SCHEMAS / name).read_text())))
    if doc["kind"] == "ScaledObject":
        trigger_schema = json.loads((SCHEMAS / "keda-postgresql-trigger.json").read_text())
        for trigger in doc["spec"]["triggers"]:
            assert trigger["type"] == "postgresql", trigger
            jsonschema.validate(trigger, trigger_schema)


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(K8S / "overlays" / request.param)


def _by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_there_are_overlays_to_check() -> None:
    assert {"single-group", "two-groups"} <= set(OVERLAYS)


def test_every_rendered_resource_validates_against_its_schema(rendered) -> None:
    kinds = {d["kind"] for d in rendered}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "ScaledObject",
            "TriggerAuthentication"} <= kinds  # fmt: skip
    for doc in rendered:
        assert doc["metadata"].get("namespace") == "gouache", doc["metadata"]
        validate(doc)


@pytest.mark.parametrize("where, value, error", [
    (("spec", "replica"), 1, "replica"),  # Deployment: a misspelt field
    (("spec", "template", "spec", "containers", 0, "resources", "limits"), "1", "limits"),
])  # fmt: skip
def test_a_broken_deployment_fails_validation(where, value, error) -> None:
    doc = copy.deepcopy(next(iter(_by_kind(render(K8S / "overlays" / "single-group"), "Deployment").values())))
    node = doc
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    with pytest.raises(Exception, match=error):
        validate(doc)


@pytest.mark.parametrize("change, error", [
    (lambda so: so["spec"].update(minReplicas=0), "minReplicas"),  # KEDA calls it minReplicaCount
    (lambda so: so["spec"]["triggers"][0]["metadata"].update(targetValue="1"), "targetValue"),
    (lambda so: so["spec"]["triggers"][0]["metadata"].pop("query"), "query"),
    (lambda so: so["spec"].update(maxReplicaCount="four"), "four"),
])  # fmt: skip
def test_a_broken_scaled_object_fails_validation(change, error) -> None:
    so = copy.deepcopy(next(iter(_by_kind(render(K8S / "overlays" / "single-group"), "ScaledObject").values())))
    change(so)
    with pytest.raises(jsonschema.ValidationError, match=error):
        validate(so)


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def test_each_worker_deployment_is_scaled_by_its_own_query(rendered) -> None:
    deployments = _by_kind(rendered, "Deployment")
    scaled = _by_kind(rendered, "ScaledObject")
    workers = {n: d for n, d in deployments.items() if n.startswith("gouache-worker")}
    assert workers and len(scaled) == len(workers)
    auth = _by_kind(rendered, "TriggerAuthentication")
    for so in scaled.values():
        target = workers[so["spec"]["scaleTargetRef"]["name"]]
        env = _env(target["spec"]["template"]["spec"]["containers"][0])
        models = json.loads(env["GOUACHE_WORKER__MODELS"])
        per_worker = int(target["metadata"]["annotations"]["gouache.dev/images-per-worker"])
        [trigger] = so["spec"]["triggers"]
        assert trigger["metadata"]["query"] == scaling_query(per_worker, models)
        assert trigger["metadata"]["targetQueryValue"] == "1"  # the query returns workers
        assert trigger["authenticationRef"]["name"] in auth
        assert so["spec"]["minReplicaCount"] in (0, 1)
        assert "replicas" not in target["spec"]  # KEDA owns the count
        # The worker drains inside the grace period, with time to spare for the hand-back.
        grace = target["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert float(env["GOUACHE_WORKER__DRAIN_SECONDS"]) + 5 <= grace
        limits = target["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == 1
    groups = [json.loads(_env(w["spec"]["template"]["spec"]["containers"][0])["GOUACHE_WORKER__MODELS"])
              for w in workers.values()]  # fmt: skip
    flat = [m for g in groups for m in g]
    assert len(flat) == len(set(flat)), "a model in two groups would be claimed by both"


def test_settings_and_secrets_the_pods_read_exist(rendered, tmp_path: Path, monkeypatch) -> None:
    parser = build_parser()
    config = next(iter(_by_kind(rendered, "ConfigMap").values()))["data"]["gouache.toml"]
    (tmp_path / "gouache.toml").write_text(config)
    for doc in _by_kind(rendered, "Deployment").values():
        spec = doc["spec"]["template"]["spec"]
        secret_mounts = {m["mountPath"] for c in spec["containers"] + spec.get("initContainers", [])
                         for m in c.get("volumeMounts", []) if m["name"] == "secrets"}  # fmt: skip
        assert secret_mounts == {"/run/secrets/gouache"}
        assert {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v} == {"gouache-secrets"}
        for container in spec["containers"] + spec.get("initContainers", []):
            argv = container.get("args") or container["command"][-1].split("&&")[0].split()
            parser.parse_args([a for a in argv if a != "gouache"][:1] or ["run"])
            env = _env(container)
            for name, value in env.items():
                if name.endswith("_FILE"):
                    assert value.startswith("/run/secrets/gouache/"), name
                    assert value.rsplit("/", 1)[1] in SECRET_KEYS, value
            with monkeypatch.context() as m:
                for name, value in env.items():
                    if name.startswith("GOUACHE_") and not name.endswith("_FILE"):
                        m.setenv(name, value.replace("/etc/gouache/gouache.toml", str(tmp_path / "gouache.toml")))
                settings = Settings.load()  # every value parses (extra="ignore" aside, below)
                for name in env:
                    if name.startswith("GOUACHE_WORKER__"):
                        assert name.removeprefix("GOUACHE_WORKER__").lower() in type(settings.worker).model_fields
    auth = next(iter(_by_kind(rendered, "TriggerAuthentication").values()))
    assert {r["key"] for r in auth["spec"]["secretTargetRef"]} <= SECRET_KEYS


def test_the_bot_probes_do_not_need_a_worker(rendered) -> None:
    bot = _by_kind(rendered, "Deployment")["gouache-bot"]["spec"]
    assert bot["replicas"] == 1 and bot["strategy"]["type"] == "Recreate"
    container = bot["template"]["spec"]["containers"][0]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz?worker=optional"
    init = bot["template"]["spec"]["initContainers"][0]["command"][-1]
    assert "gouache migrate" in init and "gouache keda-role" in init
