"""Allowed keys of the deploy/ YAML files, transcribed by hand, and a checker.

Sources (read 2026-11-26):
  Cloud Run service YAML (Admin API v1, Knative serving.knative.dev/v1):
    https://cloud.google.com/run/docs/reference/yaml/v1
    https://cloud.google.com/run/docs/reference/rest/v1/namespaces.services
  GPU fields (nodeSelector run.googleapis.com/accelerator, nvidia.com/gpu limit,
  gpu-zonal-redundancy-disabled annotation; 4 vCPU/16 GiB min for nvidia-l4,
  20 vCPU/80 GiB for nvidia-rtx-pro-6000):
    https://cloud.google.com/run/docs/configuring/services/gpu
  Probes (startup failureThreshold x periodSeconds <= 1800 s with a GPU;
  periodSeconds 1..240; timeoutSeconds <= periodSeconds):
    https://cloud.google.com/run/docs/configuring/healthchecks
  Direct VPC egress (network-interfaces JSON, vpc-access-egress all-traffic):
    https://cloud.google.com/run/docs/configuring/vpc-direct-vpc
  Cloud Build config file schema (Build resource):
    https://cloud.google.com/build/docs/build-config-file-schema

Only the subset kiln's files could plausibly use is listed for nested
objects; a key outside these lists fails the check, so a typo such as
`containerConcurency` is caught before `gcloud` sees it.
"""

import re

STR, INT, BOOL = "string", "int", "bool"
NUMERIC_STR = "numeric-string"  # ints written as quoted strings are accepted too


class Map:
    """A mapping with free-form keys (labels) or keys from a fixed list."""

    def __init__(self, keys=None, value=STR):
        self.keys = keys
        self.value = value


class ListOf:
    def __init__(self, item):
        self.item = item


class Enum:
    def __init__(self, *values):
        self.values = values


# ---- Cloud Run ----------------------------------------------------------------
SERVICE_ANNOTATIONS = {
    "run.googleapis.com/custom-audiences", "run.googleapis.com/launch-stage",
    "run.googleapis.com/description", "run.googleapis.com/ingress",
    "run.googleapis.com/binary-authorization",
    "run.googleapis.com/binary-authorization-breakglass", "run.googleapis.com/minScale",
    "run.googleapis.com/maxScale", "run.googleapis.com/function-target",
    "run.googleapis.com/invoker-iam-disabled", "run.googleapis.com/iap-enabled",
    "run.googleapis.com/scalingMode", "run.googleapis.com/manualInstanceCount",
}
REVISION_ANNOTATIONS = {
    "autoscaling.knative.dev/minScale", "autoscaling.knative.dev/maxScale",
    "run.googleapis.com/cpu-throttling", "run.googleapis.com/startup-cpu-boost",
    "run.googleapis.com/sessionAffinity", "run.googleapis.com/cloudsql-instances",
    "run.googleapis.com/execution-environment", "run.googleapis.com/vpc-access-connector",
    "run.googleapis.com/vpc-access-egress", "run.googleapis.com/network-interfaces",
    "run.googleapis.com/encryption-key", "run.googleapis.com/container-dependencies",
    "run.googleapis.com/gpu-zonal-redundancy-disabled", "run.googleapis.com/base-images",
}
PROBE = {
    "initialDelaySeconds": INT, "timeoutSeconds": INT, "failureThreshold": INT,
    "periodSeconds": INT,
    "httpGet": {"path": STR, "port": INT,
                "httpHeaders": ListOf({"name": STR, "value": STR})},
    "tcpSocket": {"port": INT},
    "grpc": {"port": INT, "service": STR},
}
CONTAINER = {
    "name": STR, "image": STR, "command": ListOf(STR), "args": ListOf(STR),
    "workingDir": STR,
    "env": ListOf({"name": STR, "value": STR,
                   "valueFrom": {"secretKeyRef": {"name": STR, "key": STR}}}),
    "ports": ListOf({"name": Enum("http1", "h2c"), "containerPort": INT}),
    "resources": {"limits": Map({"cpu", "memory", "nvidia.com/gpu"}, NUMERIC_STR)},
    "volumeMounts": ListOf({"name": STR, "mountPath": STR, "subPath": STR}),
    "startupProbe": PROBE, "livenessProbe": PROBE,
}
VOLUME = {
    "name": STR,
    "secret": {"secretName": STR, "items": ListOf({"key": STR, "path": STR})},
    "emptyDir": {"medium": STR, "sizeLimit": STR},
    "csi": {"driver": STR, "readOnly": BOOL, "volumeAttributes": Map(None, STR)},
}
CLOUD_RUN_SERVICE = {
    "apiVersion": Enum("serving.knative.dev/v1"),
    "kind": Enum("Service"),
    "metadata": {"name": STR, "namespace": STR, "labels": Map(None, STR),
                 "annotations": Map(SERVICE_ANNOTATIONS, STR)},
    "spec": {
        "template": {
            "metadata": {"name": STR, "labels": Map(None, STR),
                         "annotations": Map(REVISION_ANNOTATIONS, STR)},
            "spec": {
                "containerConcurrency": INT, "timeoutSeconds": INT,
                "serviceAccountName": STR,
                "nodeSelector": Map({"run.googleapis.com/accelerator"},
                                    Enum("nvidia-l4", "nvidia-rtx-pro-6000")),
                "containers": ListOf(CONTAINER), "volumes": ListOf(VOLUME),
            },
        },
        "traffic": ListOf({"revisionName": STR, "latestRevision": BOOL, "percent": INT,
                           "tag": STR}),
    },
}
GPU_MINIMUMS = {"nvidia-l4": (4, 16), "nvidia-rtx-pro-6000": (20, 80)}  # vCPU, GiB

# ---- Cloud Build ----------------------------------------------------------------
BUILD_STEP = {
    "name": STR, "args": ListOf(STR), "env": ListOf(STR), "allowFailure": BOOL,
    "allowExitCodes": ListOf(INT), "dir": STR, "id": STR, "waitFor": ListOf(STR),
    "entrypoint": STR, "secretEnv": ListOf(STR),
    "volumes": ListOf({"name": STR, "path": STR}), "timeout": STR, "script": STR,
    "automapSubstitutions": BOOL,
}
CLOUD_BUILD = {
    "steps": ListOf(BUILD_STEP), "timeout": STR, "queueTtl": STR, "logsBucket": STR,
    "options": {
        "env": ListOf(STR), "secretEnv": ListOf(STR),
        "volumes": ListOf({"name": STR, "path": STR}),
        "sourceProvenanceHash": ListOf(Enum("NONE", "SHA256", "MD5")),
        "machineType": Enum("UNSPECIFIED", "N1_HIGHCPU_8", "N1_HIGHCPU_32", "E2_HIGHCPU_8",
                            "E2_HIGHCPU_32", "E2_MEDIUM"),
        "diskSizeGb": NUMERIC_STR,
        "substitutionOption": Enum("MUST_MATCH", "ALLOW_LOOSE"),
        "dynamicSubstitutions": BOOL, "automapSubstitutions": BOOL,
        "logStreamingOption": Enum("STREAM_DEFAULT", "STREAM_ON", "STREAM_OFF"),
        "logging": Enum("LOGGING_UNSPECIFIED", "LEGACY", "GCS_ONLY", "STACKDRIVER_ONLY",
                        "CLOUD_LOGGING_ONLY", "NONE"),
        "defaultLogsBucketBehavior": STR, "pool": {"name": STR},
        "requestedVerifyOption": Enum("NOT_VERIFIED", "VERIFIED"),
    },
    "substitutions": Map(None, STR), "tags": ListOf(STR), "serviceAccount": STR,
    "availableSecrets": Map(None, STR), "images": ListOf(STR),
    "artifacts": Map(None, STR),
}
SUBSTITUTION_KEY = re.compile(r"^_[A-Z0-9_]+$")
BUILTIN_SUBSTITUTIONS = {"PROJECT_ID", "PROJECT_NUMBER", "BUILD_ID", "LOCATION",
                         "TRIGGER_NAME", "COMMIT_SHA", "REVISION_ID", "SHORT_SHA",
                         "REPO_NAME", "REPO_FULL_NAME", "BRANCH_NAME", "TAG_NAME",
                         "REF_NAME", "TRIGGER_BUILD_CONFIG_PATH", "SERVICE_ACCOUNT_EMAIL",
                         "SERVICE_ACCOUNT"}


def check(value, schema, path="", errors=None):
    """Returns a list of 'path: problem' strings (empty when value fits)."""
    errors = [] if errors is None else errors
    here = path or "(top)"
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            errors.append(f"{here}: expected a mapping, got {type(value).__name__}")
            return errors
        for k, v in value.items():
            if k not in schema:
                close = [s for s in schema if _similar(k, s)]
                hint = f" (did you mean {close[0]}?)" if close else ""
                errors.append(f"{path}.{k}: unknown key{hint}".lstrip("."))
            else:
                check(v, schema[k], f"{path}.{k}".lstrip("."), errors)
    elif isinstance(schema, ListOf):
        if not isinstance(value, list):
            errors.append(f"{here}: expected a list")
            return errors
        for i, item in enumerate(value):
            check(item, schema.item, f"{path}[{i}]", errors)
    elif isinstance(schema, Map):
        if not isinstance(value, dict):
            errors.append(f"{here}: expected a mapping")
            return errors
        for k, v in value.items():
            if schema.keys is not None and k not in schema.keys:
                errors.append(f"{path}.{k}: unknown key")
            else:
                check(v, schema.value, f"{path}.{k}", errors)
    elif isinstance(schema, Enum):
        if value not in schema.values:
            errors.append(f"{here}: {value!r} is not one of {', '.join(schema.values)}")
    elif schema == STR:
        if not isinstance(value, str):
            errors.append(f"{here}: expected a string, got {value!r}")
    elif schema == INT:
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{here}: expected an integer, got {value!r}")
    elif schema == BOOL:
        if not isinstance(value, bool):
            errors.append(f"{here}: expected true/false, got {value!r}")
    elif schema == NUMERIC_STR:
        if not (isinstance(value, (int, str)) and not isinstance(value, bool)):
            errors.append(f"{here}: expected a number or quoted number, got {value!r}")
    return errors


def _similar(a, b):
    a, b = a.lower(), b.lower()
    if abs(len(a) - len(b)) > 2:
        return False
    common = sum(1 for x, y in zip(a, b) if x == y)
    return common >= max(len(a), len(b)) - 2


def memory_gib(text):
    m = re.fullmatch(r"(\d+)(Gi|Mi)", str(text))
    if not m:
        raise ValueError(f"memory {text!r}: expected e.g. 16Gi")
    return int(m.group(1)) / (1024 if m.group(2) == "Mi" else 1)


def check_cloud_run_rules(doc):
    """Constraints beyond key names that Cloud Run enforces on GPU services."""
    errors = []
    spec = doc["spec"]["template"]["spec"]
    ann = doc["spec"]["template"]["metadata"].get("annotations", {})
    gpu = spec.get("nodeSelector", {}).get("run.googleapis.com/accelerator")
    cc = spec.get("containerConcurrency", 80)
    if not 1 <= cc <= 1000:
        errors.append(f"containerConcurrency {cc} outside 1..1000")
    gpu_containers = [c for c in spec["containers"]
                      if "nvidia.com/gpu" in c.get("resources", {}).get("limits", {})]
    if gpu:
        if len(gpu_containers) != 1:
            errors.append("exactly one container must hold the GPU")
        if ann.get("run.googleapis.com/cpu-throttling") != "false":
            errors.append("GPU services need instance-based billing (cpu-throttling 'false')")
        for c in gpu_containers:
            lim = c["resources"]["limits"]
            cpu_min, mem_min = GPU_MINIMUMS[gpu]
            if float(lim.get("cpu", 0)) < cpu_min or memory_gib(lim.get("memory", "0Gi")) < mem_min:
                errors.append(f"{gpu} needs at least {cpu_min} vCPU and {mem_min} GiB")
            if str(lim["nvidia.com/gpu"]) != "1":
                errors.append("Cloud Run attaches one GPU per instance")
    for c in spec["containers"]:
        for name in ("startupProbe", "livenessProbe"):
            p = c.get(name)
            if not p:
                continue
            period = p.get("periodSeconds", 10)
            if not 1 <= period <= 240:
                errors.append(f"{name}.periodSeconds {period} outside 1..240")
            if p.get("timeoutSeconds", 1) > period:
                errors.append(f"{name}.timeoutSeconds exceeds periodSeconds")
            if name == "startupProbe":
                window = period * p.get("failureThreshold", 3)
                limit = 1800 if gpu else 600
                if window > limit:
                    errors.append(f"startupProbe window {window} s exceeds {limit} s")
    for k in ("autoscaling.knative.dev/minScale", "autoscaling.knative.dev/maxScale"):
        if k in ann and not str(ann[k]).isdigit():
            errors.append(f"{k} must be a whole number as a string")
    return errors


def substitution_problems(doc, text):
    """Cloud Build refuses undefined substitutions and (MUST_MATCH) unused ones."""
    errors = []
    defined = set((doc.get("substitutions") or {}).keys())
    for k in defined:
        if not SUBSTITUTION_KEY.match(k):
            errors.append(f"substitution {k}: user keys start with _ and use A-Z 0-9 _")
    body = re.sub(r"^\s*#.*$", "", text, flags=re.M)
    used = set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)\}?", body.replace("$$", "")))
    for k in used - defined - BUILTIN_SUBSTITUTIONS:
        errors.append(f"${k} is used but not defined in substitutions")
    loose = (doc.get("options") or {}).get("substitutionOption") == "ALLOW_LOOSE"
    if not loose:
        for k in defined - used:
            errors.append(f"substitution {k} is defined but never used")
    return errors
