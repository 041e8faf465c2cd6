"""Asserts what matters to this system in the rendered Kubernetes manifests.

Usage: check_manifests.py [--site] RENDERED.yaml...  (kubectl kustomize output)

--site: the files are a real site's render (scripts/deploy/render.sh): the
CORS origins and the secret values must not be placeholders.
"""
import re
import sys
from urllib.parse import urlparse

import yaml

# CONTRACT.md section 1; JWT_SECRET, DATABASE_URL and REDIS_PASSWORD belong in the Secret.
CONTRACT = {
    "SERVER_HOST", "SERVER_PORT", "AURA_PLATFORM_URI", "MAIN_SERVICE_URI", "AUTH_SERVER_URI",
    "CORS_ALLOWED_ORIGINS", "CORS_ALLOWED_METHODS", "CORS_ALLOWED_HEADERS",
    "CORS_ALLOW_CREDENTIALS", "CORS_MAX_AGE", "REDIS_URL", "REDIS_HOST", "REDIS_PORT",
}
SECRET_KEYS = {"JWT_SECRET", "DATABASE_URL", "REDIS_PASSWORD"}
SECRET_NAME = "dwp-secrets"
STREAM_IDLE_DEFAULT = 3600  # GATEWAY_STREAM_IDLE_TIMEOUT_SECS
DB_POOL_DEFAULT = 10  # DB_MAX_CONNECTIONS
MIN_CPU_TARGET_MILLI = 150  # an HPA that scales below this reacts to noise
failures = []


def check(ok, message):
    if not ok:
        failures.append(message)


def env_value(container, name):
    for item in container.get("env", []):
        if item["name"] == name:
            return item.get("value")
    return None


def millicores(quantity):
    text = str(quantity)
    return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)


def placeholder_origin(origin):
    """A value no real site has: empty, any, local, or an example domain."""
    if origin in ("", "*", "null") or "CHANGE_ME" in origin:
        return True
    host = (urlparse(origin).hostname or "").lower()
    return (not host or host == "localhost" or host.startswith("127.") or host == "::1"
            or host == "example" or host.endswith(".example")
            or re.search(r"(^|\.)example\.(com|net|org)$", host) is not None)


def check_pods(path, by_kind):
    for name, dep in by_kind.get("Deployment", {}).items():
        pod = dep["spec"]["template"]["spec"]
        check(pod.get("securityContext", {}).get("runAsNonRoot") is True, f"{path}: {name}: pod runAsNonRoot")
        for c in pod.get("initContainers", []) + pod["containers"]:
            where = f"{path}: {name}/{c['name']}"
            if c in pod["containers"]:
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
                    ref = item.get("valueFrom", {}).get("secretKeyRef")
                    check(ref is not None, f"{where}: {item['name']} comes from a Secret")
                    if ref:
                        check(ref["name"] in by_kind.get("Secret", {}) or ref["name"] == SECRET_NAME,
                              f"{where}: {item['name']} refers to Secret {ref['name']}, which is not rendered")


def check_secrets(path, by_kind, site):
    """A rendered Secret is named after its content (kustomize's hash), so
    applying never overwrites a Secret that exists: new content, new name."""
    for name, secret in by_kind.get("Secret", {}).items():
        check(re.fullmatch(SECRET_NAME + r"-[a-z0-9]{10}", name) is not None,
              f"{path}: Secret {name} is not named by its content (a generator without the hash suffix "
              "would overwrite the live Secret)")
        values = dict(secret.get("stringData", {}))
        values.update(secret.get("data", {}))
        check(set(values) == SECRET_KEYS, f"{path}: Secret {name} keys {sorted(values)}")
        if site:
            import base64
            for key in ("JWT_SECRET", "DATABASE_URL"):
                text = base64.b64decode(secret.get("data", {}).get(key, "")).decode() if key in secret.get("data", {}) \
                    else secret.get("stringData", {}).get(key, "")
                check(text != "" and "CHANGE_ME" not in text, f"{path}: Secret {name}: {key} is empty or a placeholder")


def check_scaling(path, by_kind):
    for name, hpa in by_kind.get("HorizontalPodAutoscaler", {}).items():
        dep = by_kind["Deployment"][hpa["spec"]["scaleTargetRef"]["name"]]
        request = dep["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] == "Resource" and metric["resource"]["name"] == "cpu":
                target = metric["resource"]["target"]["averageUtilization"] * millicores(request) // 100
                check(target >= MIN_CPU_TARGET_MILLI,
                      f"{path}: HPA {name} scales at {target} millicores (under {MIN_CPU_TARGET_MILLI}m: noise)")
    # The database connection budget: every main-service replica's pool, and
    # one migrator per pod the rollout adds, within what the server allows.
    dep = by_kind["Deployment"]["main-service"]
    container = dep["spec"]["template"]["spec"]["containers"][0]
    pool = int(env_value(container, "DB_MAX_CONNECTIONS") or DB_POOL_DEFAULT)
    replicas = by_kind["HorizontalPodAutoscaler"]["main-service"]["spec"]["maxReplicas"]
    surge = int(dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"])
    notes = dep["metadata"].get("annotations", {})
    limit = int(notes.get("dwp/postgres-max-connections", 0)) - int(notes.get("dwp/postgres-reserved-connections", 0))
    need = (replicas + surge) * pool + surge
    check(need <= limit, f"{path}: main-service may open {need} database connections "
          f"(({replicas} + {surge} surge) x {pool} + {surge} migrators), the server allows {limit}")


def check_edges(path, by_kind, config):
    gateway = by_kind["Deployment"]["gateway"]["spec"]["template"]["spec"]["containers"][0]
    idle = int(env_value(gateway, "GATEWAY_STREAM_IDLE_TIMEOUT_SECS") or STREAM_IDLE_DEFAULT)
    ingress = by_kind.get("Ingress", {}).get("gateway")
    check(ingress is not None, f"{path}: Ingress gateway")
    if ingress:
        notes = ingress["metadata"].get("annotations", {})
        check(notes.get("nginx.ingress.kubernetes.io/proxy-buffering") == "off", f"{path}: Ingress buffers SSE")
        for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
            value = int(notes.get(f"nginx.ingress.kubernetes.io/{timeout}", 60))
            check(value > idle, f"{path}: Ingress {timeout} {value} s cuts streams the gateway keeps {idle} s")
        check(bool(ingress["spec"].get("tls")), f"{path}: Ingress without TLS (no HTTP/2 for browsers)")
    # Client addresses behind the Ingress: each service counts the hops in
    # front of it, so login failures and the per-address cap are keyed on
    # the client, not on the Ingress every client shares.
    main = by_kind["Deployment"]["main-service"]["spec"]["template"]["spec"]["containers"][0]
    check(env_value(gateway, "GATEWAY_FORWARDED_HOPS") == "1",
          f"{path}: gateway GATEWAY_FORWARDED_HOPS is not 1 (the Ingress)")
    check(env_value(main, "FORWARDED_HOPS") == "2",
          f"{path}: main-service FORWARDED_HOPS is not 2 (the Ingress and the gateway)")
    # Prometheus: the pods say where /metrics is, and it is their admin port.
    for name, dep in by_kind["Deployment"].items():
        if name not in ("gateway", "main-service"):
            continue
        template = dep["spec"]["template"]
        port = template["metadata"].get("annotations", {}).get("prometheus.io/port")
        admin = [p["containerPort"] for p in template["spec"]["containers"][0]["ports"] if p.get("name") == "admin"]
        check(port is not None and [int(port)] == admin, f"{path}: {name}: prometheus.io/port {port} is not the admin port {admin}")
    policy = by_kind.get("NetworkPolicy", {}).get("main-service")
    check(policy is not None, f"{path}: NetworkPolicy main-service")
    if policy:
        by_port = {}
        for rule in policy["spec"]["ingress"]:
            for port in rule.get("ports", []):
                by_port.setdefault(port["port"], []).extend(rule["from"])
        api = {p["podSelector"]["matchLabels"].get("app") for p in by_port.get(8081, [])}
        check(api == {"gateway", "aura-platform"}, f"{path}: only the gateway and the agent reach main-service: {api}")
        for p in by_port.get(8081, []):
            check(len(p["podSelector"]["matchLabels"]) == 1, f"{path}: NetworkPolicy selector {p} asks for labels those pods lack")
        check(any("prometheus" in str(p) for p in by_port.get(8091, [])), f"{path}: Prometheus cannot reach main-service's admin port")


def check_file(path, site):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    check_pods(path, by_kind)
    check_secrets(path, by_kind, site)
    check_scaling(path, by_kind)

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
    origins = config.get("CORS_ALLOWED_ORIGINS")
    check(origins is not None, f"{path}: CORS_ALLOWED_ORIGINS is not set")
    if site and origins is not None:
        bad = [o for o in (o.strip() for o in origins.split(",")) if placeholder_origin(o)] or ([] if origins.strip() else [""])
        check(not bad, f"{path}: CORS_ALLOWED_ORIGINS holds placeholder origins {bad}: set the frontend's real origin in site.env")
    check_edges(path, by_kind, config)

    for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"):
        for name in ("gateway", "main-service"):
            check(name in by_kind.get(kind, {}), f"{path}: {kind} {name}")
    main = by_kind["Deployment"]["main-service"]["spec"]["template"]["spec"]
    migrate = [c for c in main.get("initContainers", []) if c.get("command") == ["/usr/local/bin/migration", "up"]]
    check(len(migrate) == 1 and migrate[0]["image"].split(":")[0] == main["containers"][0]["image"].split(":")[0],
          f"{path}: main-service migrates (migration up) in an init container of its own image")
    check("Job" not in by_kind, f"{path}: a Job cannot be re-applied with a new image (its template is immutable)")


site = "--site" in sys.argv[1:]
paths = [a for a in sys.argv[1:] if a != "--site"]
for path in paths:
    check_file(path, site)
if failures:
    print("\n".join("FAIL " + f for f in failures))
    sys.exit(1)
print(f"manifests: every check passed ({', '.join(paths)})")
