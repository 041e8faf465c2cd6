"""Asserts what matters to this system in the rendered Kubernetes manifests.

Usage: check_manifests.py RENDERED.yaml...  (kubectl kustomize output)
"""
import sys

import yaml

# CONTRACT.md section 1; JWT_SECRET, DATABASE_URL and REDIS_PASSWORD belong in the Secret.
CONTRACT = {
    "SERVER_HOST", "SERVER_PORT", "AURA_PLATFORM_URI", "MAIN_SERVICE_URI", "AUTH_SERVER_URI",
    "CORS_ALLOWED_ORIGINS", "CORS_ALLOWED_METHODS", "CORS_ALLOWED_HEADERS",
    "CORS_ALLOW_CREDENTIALS", "CORS_MAX_AGE", "REDIS_URL", "REDIS_HOST", "REDIS_PORT",
}
SECRET_KEYS = {"JWT_SECRET", "DATABASE_URL", "REDIS_PASSWORD"}
PLACEHOLDER = "CHANGE_ME"
failures = []


def check(ok, message):
    if not ok:
        failures.append(message)


def env_value(container, name):
    for item in container.get("env", []):
        if item["name"] == name:
            return item.get("value")
    return None


def check_file(path):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d

    for name, dep in by_kind.get("Deployment", {}).items():
        pod = dep["spec"]["template"]["spec"]
        check(pod.get("securityContext", {}).get("runAsNonRoot") is True, f"{path}: {name}: pod runAsNonRoot")
        for c in pod["containers"]:
            where = f"{path}: {name}/{c['name']}"
            check("livenessProbe" in c and "readinessProbe" in c, f"{where}: liveness and readiness probes")
            limits = c.get("resources", {}).get("limits", {})
            requests = c.get("resources", {}).get("requests", {})
            check({"cpu", "memory"} <= limits.keys() and {"cpu", "memory"} <= requests.keys(), f"{where}: requests and limits")
            sc = c.get("securityContext", {})
            check(sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation false")
            check(sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem")
            check("ALL" in sc.get("capabilities", {}).get("drop", []), f"{where}: capabilities dropped")
            for item in c.get("env", []):
                if item["name"] in SECRET_KEYS:
                    check("secretKeyRef" in item.get("valueFrom", {}), f"{where}: {item['name']} comes from a Secret")

    gateway = by_kind["Deployment"]["gateway"]["spec"]["template"]["spec"]
    container = gateway["containers"][0]
    drain = int(env_value(container, "GATEWAY_SHUTDOWN_GRACE_SECS") or 30)
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    check(gateway["terminationGracePeriodSeconds"] > drain + pause,
          f"{path}: gateway grace {gateway['terminationGracePeriodSeconds']} s exceeds preStop {pause} s + drain {drain} s")

    config = by_kind["ConfigMap"]["dwp-config"]["data"]
    check(set(config) <= CONTRACT, f"{path}: ConfigMap keys outside the contract: {sorted(set(config) - CONTRACT)}")
    check(config.get("AURA_PLATFORM_URI") == "http://aura-platform:9000", f"{path}: AURA_PLATFORM_URI")
    check(config.get("MAIN_SERVICE_URI") == "http://main-service:8081", f"{path}: MAIN_SERVICE_URI")

    for name, secret in by_kind.get("Secret", {}).items():
        values = dict(secret.get("stringData", {}))
        values.update(secret.get("data", {}))
        check(set(values) == SECRET_KEYS, f"{path}: Secret {name} keys")
        check(all(v == PLACEHOLDER for v in values.values()), f"{path}: Secret {name} holds a value that is not {PLACEHOLDER}")

    for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"):
        for name in ("gateway", "main-service"):
            check(name in by_kind.get(kind, {}), f"{path}: {kind} {name}")
    policy = by_kind.get("NetworkPolicy", {}).get("main-service")
    check(policy is not None, f"{path}: NetworkPolicy main-service")
    if policy:
        allowed = {p["podSelector"]["matchLabels"]["app"] for rule in policy["spec"]["ingress"] for p in rule["from"]}
        check(allowed == {"gateway", "aura-platform"}, f"{path}: only the gateway and the agent reach main-service: {allowed}")
    job = by_kind.get("Job", {}).get("dwp-migrate")
    check(job is not None and job["spec"]["template"]["spec"]["containers"][0]["command"][-1] == "up", f"{path}: migration Job")


for path in sys.argv[1:]:
    check_file(path)
if failures:
    print("\n".join("FAIL " + f for f in failures))
    sys.exit(1)
print(f"manifests: every check passed ({', '.join(sys.argv[1:])})")
