"""Checks a rendered FlowKit overlay for what schemas cannot see: every reference resolves
(ConfigMaps, Secrets made in the overlay, volumes, scale targets, KEDA's authentication), selectors
select pods, FlowKit's pods run as non-root without privilege escalation, images are pinned, a
worker's grace period outlasts its drain, and the KEDA trigger counts the queue workers consume.
Usage: k8s_check.py RENDERED.yaml  (exit 1 on a problem; Secrets the overlay expects you to
create are listed, not failed)."""
import sys
import yaml

path = sys.argv[1]
docs = [d for d in yaml.safe_load_all(open(path)) if d]
by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
problems, external = [], set()


def need(kind, name, where):
    if (kind, name) not in by:
        problems.append(f"{where}: {kind} `{name}` is not in the overlay")


def pods():
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet"):
            yield d, d["spec"]["template"]
        elif d["kind"] == "Job":
            yield d, d["spec"]["template"]


def selects(selector, kinds=("Deployment", "StatefulSet")):
    labels = selector.get("matchLabels", selector)
    return any(all(t["metadata"].get("labels", {}).get(k) == v for k, v in labels.items()) for _, t in pods())


configmaps = {n: d for (k, n), d in by.items() if k == "ConfigMap"}
for owner, t in pods():
    where = f"{owner['kind']} {owner['metadata']['name']}"
    spec = t["spec"]
    flowkit = owner["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "flowkit"
    sc = spec.get("securityContext", {})
    if not sc.get("runAsNonRoot") or not isinstance(sc.get("runAsUser"), int) or sc.get("runAsUser") == 0:
        problems.append(f"{where}: the pod must run as a numeric non-root user (runAsNonRoot, runAsUser)")
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        csc = c.get("securityContext", {})
        if csc.get("allowPrivilegeEscalation") is not False or "ALL" not in csc.get("capabilities", {}).get("drop", []):
            problems.append(f"{where}/{c['name']}: allowPrivilegeEscalation false and capabilities drop ALL")
        image = c["image"]
        if ":" not in image.split("/")[-1] or image.endswith(":latest") and flowkit:
            problems.append(f"{where}/{c['name']}: image `{image}` is not pinned to a tag")
        for ef in c.get("envFrom", []):
            if "configMapRef" in ef:
                need("ConfigMap", ef["configMapRef"]["name"], where)
            if "secretRef" in ef and ("Secret", ef["secretRef"]["name"]) not in by:
                external.add(ef["secretRef"]["name"])
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                s = by.get(("Secret", ref["name"]))
                if s is None:
                    external.add(ref["name"])
                elif ref["key"] not in (s.get("data") or {}) and ref["key"] not in (s.get("stringData") or {}):
                    problems.append(f"{where}: Secret `{ref['name']}` has no key `{ref['key']}`")
    for v in spec.get("volumes", []):
        if "configMap" in v:
            need("ConfigMap", v["configMap"]["name"], where)
        if "persistentVolumeClaim" in v:
            need("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"], where)
        if "secret" in v and ("Secret", v["secret"]["secretName"]) not in by:
            external.add(v["secret"]["secretName"])
    if flowkit and t["metadata"]["labels"].get("app.kubernetes.io/component") == "worker":
        args = spec["containers"][0]["args"]
        grace = float(args[args.index("--shutdown-grace") + 1]) if "--shutdown-grace" in args else 30.0
        if spec.get("terminationGracePeriodSeconds", 30) <= grace:
            problems.append(f"{where}: terminationGracePeriodSeconds must outlast the worker's --shutdown-grace ({grace:g} s)")

for d in docs:
    where = f"{d['kind']} {d['metadata']['name']}"
    if d["kind"] in ("Service", "PodDisruptionBudget"):
        sel = d["spec"]["selector"]
        if not selects(sel):
            problems.append(f"{where}: its selector {sel} selects no pod of the overlay")
    if d["kind"] == "HorizontalPodAutoscaler":
        need(d["spec"]["scaleTargetRef"]["kind"], d["spec"]["scaleTargetRef"]["name"], where)
    if d["kind"] == "ScaledObject":
        target = d["spec"]["scaleTargetRef"]["name"]
        need("Deployment", target, where)
        hpas = [n for (k, n), h in by.items() if k == "HorizontalPodAutoscaler" and h["spec"]["scaleTargetRef"]["name"] == target]
        if hpas:
            problems.append(f"{where}: Deployment `{target}` is also scaled by HorizontalPodAutoscaler {hpas} (KEDA makes its own)")
        names = {t["metadata"].get("listName") for t in d["spec"].get("triggers", [])}
        for q in (configmaps.get("flowkit", {}).get("data", {}).get("FLOWKIT_WORKER_QUEUES") or "default").split(","):
            missing = [n for n in [q] + [q + f"\x06\x16{p}" for p in (3, 6, 9)] if n not in names]
            if missing:
                problems.append(f"{where}: no trigger counts {missing!r}: messages with a priority wait there")
        for trig in d["spec"].get("triggers", []):
            if trig["type"] not in ("redis", "redis-sentinel"):
                problems.append(f"{where}: trigger type `{trig['type']}`; FlowKit's queues are Redis lists")
                continue
            queues = (configmaps.get("flowkit", {}).get("data", {}).get("FLOWKIT_WORKER_QUEUES") or "default").split(",")
            # A queue's lists: the queue itself and its priority lists (kombu's steps 3, 6, 9).
            lists = {q + suffix for q in queues for suffix in ["", "\x06\x163", "\x06\x166", "\x06\x169"]}
            if trig["metadata"].get("listName") not in lists:
                problems.append(f"{where}: listName `{trig['metadata'].get('listName')!r}` is not a list of a queue the workers consume ({queues})")
            if not str(trig["metadata"].get("listLength", "")).isdigit():
                problems.append(f"{where}: listLength must be a whole number as a string")
            auth = trig.get("authenticationRef", {}).get("name")
            if auth:
                need("TriggerAuthentication", auth, where)
                ta = by.get(("TriggerAuthentication", auth), {})
                for ref in ta.get("spec", {}).get("secretTargetRef", []):
                    s = by.get(("Secret", ref["name"]))
                    if s is None:
                        external.add(ref["name"])
                    elif ref["key"] not in (s.get("data") or {}):
                        problems.append(f"TriggerAuthentication {auth}: Secret `{ref['name']}` has no key `{ref['key']}`")

name = path.rsplit("/", 1)[-1]
for p in problems:
    print(f"k8s: {name}: {p}", file=sys.stderr)
if external:
    print(f"k8s: {name}: create before applying: Secret {', '.join(sorted(external))}")
print(f"k8s: {name}: {len(docs)} objects, {len(problems)} problems")
sys.exit(1 if problems else 0)
