#!/usr/bin/env python3
"""Validate SynergAI's deployment files (run by scripts/validate-deploy, which installs the tools).

Checks, each failing the run with a message naming the file and the thing at fault:

1. compose/compose.yaml through a real compose implementation's `config` (docker-compose 1.29.2,
   which validates against the compose schema and resolves anchors, interpolation, profiles).
2. Every kustomization under k8s/ (base and overlays) rendered by kustomize, and every rendered
   object validated against the Kubernetes JSON schemas (kubernetes-validate, strict: unknown
   fields are errors) for each Kubernetes version asked for.
3. Cross-checks against the workspace: every SynergAI image and Dockerfile target, every binary
   and subcommand a container runs, every SYNERGAI_* variable and every key of the TOML config
   files mounted for a service maps to a real field of that binary's config struct (parsed from
   the Rust source), every host a service is told to reach exists (and, in compose, shares a
   network with it), health checks, probes and scrape targets use the port the service listens
   on, workers are placed by kubernetes.io/arch and site labels, every intake, scheduler and
   worker names the JetStream domain of the NATS server it connects to (the store none), and no
   two schedulers share an id.
4. NATS: every server config parses (nats-server -t), compose and k8s ship the same files, every
   permission rule naming the request or claim stream is there for the plain name and for each
   JetStream domain's (`SYNERGAI_REQUESTS_<domain>`; never a wildcard for the stream), and the
   hub and an edge leaf node run on loopback with their users: requests are served in both sites'
   JetStream domains, in streams named per domain, whose acknowledgements and direct gets stay in
   their domain, the edge site's also with the hub stopped; forbidden things refused.

Warnings (not failures): metrics named in the Grafana dashboard that no Rust source mentions.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import yaml

ENV_PREFIX = "SYNERGAI_"
ENV_CONFIG_FILE = "SYNERGAI_CONFIG"


class Report:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(self, msg: str) -> None:
        self.errors.append(msg)
        print(f"  FAIL {msg}", flush=True)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        print(f"  warn {msg}", flush=True)

    def ok(self, msg: str) -> None:
        print(f"  ok   {msg}", flush=True)


# ------------------------------------------------------------------------------ the workspace


@dataclass
class Struct:
    name: str
    path: Path
    fields: dict[str, str]  # field -> type text


@dataclass
class Binary:
    name: str
    crate_dir: Path
    main: Path
    subcommands: set[str] = field(default_factory=set)
    takes_subcommand: bool = False
    config_root: str | None = None  # struct loaded by config::load
    clap_env: set[str] = field(default_factory=set)


def kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def parse_structs(src: Path) -> list[Struct]:
    out = []
    roots = [src / "crates", src / "services", src / "loadgen"]
    for root in roots:
        for path in sorted(root.rglob("*.rs")):
            if "/tests/" in str(path) or "/target/" in str(path):
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            for m in re.finditer(r"^pub struct (\w+)(?:<[^>]*>)?\s*\{\n(.*?)^\}", text, re.M | re.S):
                fields = {}
                for fm in re.finditer(r"^\s+pub (\w+):\s*(.+?),\s*$", m.group(2), re.M):
                    fields[fm.group(1)] = fm.group(2)
                out.append(Struct(m.group(1), path, fields))
    return out


class ConfigSchema:
    """Key paths of a config struct, as the `config` crate sees them."""

    def __init__(self, structs: list[Struct]):
        self.by_name: dict[str, list[Struct]] = {}
        for s in structs:
            self.by_name.setdefault(s.name, []).append(s)

    def resolve(self, type_text: str, near: Path) -> tuple[str, Struct | None]:
        """('struct', s) | ('map', None) | ('leaf', None)."""
        t = type_text.strip()
        m = re.fullmatch(r"Option<(.+)>", t)
        if m:
            return self.resolve(m.group(1), near)
        if re.match(r"(std::collections::)?(BTreeMap|HashMap)<", t):
            return "map", None
        if t.startswith("Vec<"):
            return "leaf", None
        last = t.split("::")[-1]
        candidates = self.by_name.get(last, [])
        if not candidates:
            return "leaf", None
        # Same crate first (several crates have their own `HttpConfig`).
        crate = crate_dir_of(near)
        for c in candidates:
            if crate_dir_of(c.path) == crate:
                return "struct", c
        return "struct", candidates[0]

    def root(self, name: str, main: Path) -> Struct | None:
        kind, s = self.resolve(name, main)
        return s if kind == "struct" else None

    def check(self, root: Struct, path: list[str]) -> str | None:
        """None if `path` names a key of `root`, else why not."""
        cur = root
        for i, key in enumerate(path):
            if key not in cur.fields:
                known = ", ".join(sorted(cur.fields))
                where = ".".join(path[:i]) or "(top level)"
                return f"no key `{key}` in [{where}] of {root.name} ({cur.name} has: {known})"
            kind, nxt = self.resolve(cur.fields[key], cur.path)
            if kind == "map":
                return None  # any sub-key (e.g. intake.slo_ms.<model>)
            if kind == "leaf":
                if i != len(path) - 1:
                    return f"`{'.'.join(path[: i + 1])}` of {root.name} is a value, not a section"
                return None
            assert nxt is not None
            cur = nxt
        return f"`{'.'.join(path)}` of {root.name} is a section, not a value"


def crate_dir_of(path: Path) -> Path:
    p = path.parent
    while p != p.parent and not (p / "Cargo.toml").exists():
        p = p.parent
    return p


def workspace_binaries(src: Path) -> dict[str, Binary]:
    ws = tomllib.loads((src / "Cargo.toml").read_text())
    bins: dict[str, Binary] = {}
    for member in ws["workspace"]["members"]:
        crate = src / member
        manifest = tomllib.loads((crate / "Cargo.toml").read_text())
        pkg = manifest["package"]["name"]
        entries = [(b["name"], crate / b.get("path", "src/main.rs")) for b in manifest.get("bin", [])]
        if not entries and (crate / "src/main.rs").exists():
            entries = [(pkg, crate / "src/main.rs")]
        for name, main in entries:
            b = Binary(name, crate, main)
            text = main.read_text()
            m = re.search(r"enum Command \{\n(.*?)^\}", text, re.M | re.S)
            if m:
                b.takes_subcommand = True
                b.subcommands = {kebab(v) for v in re.findall(r"^    ([A-Z]\w*)", m.group(1), re.M)}
            m = re.search(r"config::load\(\s*&(\w+)::default\(\)", text)
            if m:
                b.config_root = m.group(1)
            for rs in crate.rglob("src/**/*.rs"):
                b.clap_env |= set(re.findall(r'\benv\s*=\s*"([A-Z0-9_]+)"', rs.read_text()))
            bins[name] = b
    return bins


def rust_metric_names(src: Path) -> set[str]:
    names = set()
    for root in (src / "crates", src / "services", src / "loadgen"):
        for rs in root.rglob("*.rs"):
            names |= set(re.findall(r'"(synergai_[a-z0-9_]+)"', rs.read_text(errors="replace")))
    return names


# ------------------------------------------------------------------------------ Dockerfile


@dataclass
class Target:
    name: str
    entrypoint: str | None = None
    env: dict[str, str] = field(default_factory=dict)


def dockerfile_targets(path: Path) -> dict[str, Target]:
    targets: dict[str, Target] = {}
    cur: Target | None = None
    text = re.sub(r"\\\n", " ", path.read_text())
    for line in text.splitlines():
        line = line.strip()
        m = re.match(r"FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
        if m:
            cur = Target(m.group(2) or m.group(1))
            parent = targets.get(m.group(1))
            if parent:
                cur.entrypoint, cur.env = parent.entrypoint, dict(parent.env)
            targets[cur.name] = cur
            continue
        if cur is None:
            continue
        m = re.match(r"ENTRYPOINT\s+(\[.*\])", line)
        if m:
            cur.entrypoint = Path(json.loads(m.group(1))[0]).name
        m = re.match(r"ENV\s+(\w+)=(\S+)", line)
        if m:
            cur.env[m.group(1)] = m.group(2)
    return targets


def dockerfile_copied_binaries(path: Path) -> set[str]:
    m = re.search(r"for b in ([^;]+); do", path.read_text())
    return set(m.group(1).split()) if m else set()


# ------------------------------------------------------------------------------ shared checks


class Workspace:
    def __init__(self, src: Path, deploy: Path, report: Report):
        self.src, self.deploy, self.r = src, deploy, report
        self.bins = workspace_binaries(src)
        self.schema = ConfigSchema(parse_structs(src))
        self.dockerfile = deploy / "docker" / "Dockerfile"
        self.targets = dockerfile_targets(self.dockerfile) if self.dockerfile.exists() else {}

    def image_binary(self, where: str, image: str) -> Binary | None:
        """The binary a SynergAI image runs: image `[registry/]synergai-<target>[:tag]`."""
        repo = image.rsplit("/", 1)[-1].split("@")[0].split(":")[0]
        target = repo.removeprefix("synergai-")
        t = self.targets.get(target)
        if t is None:
            self.r.error(f"{where}: image {image!r} names no target of docker/Dockerfile "
                         f"(targets: {', '.join(sorted(self.targets))})")
            return None
        if not t.entrypoint or t.entrypoint not in self.bins:
            self.r.error(f"{where}: Dockerfile target {target!r} runs {t.entrypoint!r}, not a workspace binary "
                         f"({', '.join(sorted(self.bins))})")
            return None
        if repo != t.entrypoint:
            self.r.error(f"{where}: image {repo!r} should be named after its binary {t.entrypoint!r}")
        return self.bins[t.entrypoint]

    def check_command(self, where: str, b: Binary, args: list[str]) -> None:
        if not args or args[0].startswith("-"):
            return
        if not b.takes_subcommand:
            self.r.error(f"{where}: {b.name} takes no subcommand, but is run with {args!r}")
        elif args[0] not in b.subcommands:
            self.r.error(f"{where}: {b.name} has no subcommand {args[0]!r} ({', '.join(sorted(b.subcommands))})")

    def check_env(self, where: str, b: Binary, name: str) -> None:
        if not name.startswith(ENV_PREFIX):
            return
        if name in b.clap_env:
            return
        if b.config_root is None:
            self.r.error(f"{where}: {name} is read by nothing in {b.name} (no config::load, no clap env of that name)")
            return
        if name == ENV_CONFIG_FILE:
            return
        root = self.schema.root(b.config_root, b.main)
        if root is None:
            self.r.error(f"{where}: config struct {b.config_root} of {b.name} not found in the source")
            return
        path = [p.lower() for p in name[len(ENV_PREFIX):].split("__")]
        why = self.schema.check(root, path)
        if why:
            self.r.error(f"{where}: {name} -> `{'.'.join(path)}`: {why}")

    def check_toml(self, where: str, b: Binary, text: str) -> None:
        if b.config_root is None:
            self.r.error(f"{where}: {b.name} reads no config file")
            return
        root = self.schema.root(b.config_root, b.main)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            self.r.error(f"{where}: not TOML: {e}")
            return
        assert root is not None

        def walk(d: dict, st: Struct, prefix: list[str]) -> None:
            for k, v in d.items():
                path = prefix + [k]
                dotted = ".".join(path)
                if k not in st.fields:
                    self.r.error(f"{where}: `{dotted}`: no key `{k}` in {st.name} "
                                 f"(it has: {', '.join(sorted(st.fields))})")
                    continue
                kind, nxt = self.schema.resolve(st.fields[k], st.path)
                if kind == "struct":
                    if not isinstance(v, dict):
                        self.r.error(f"{where}: `{dotted}` is a section ({nxt.name}), given a value")
                    else:
                        walk(v, nxt, path)
                elif kind == "leaf" and isinstance(v, dict):
                    self.r.error(f"{where}: `{dotted}` is a value, given a section")

        walk(data, root, [])


def listen_port(env: dict[str, str]) -> int | None:
    v = env.get("SYNERGAI_HTTP__LISTEN")
    if not v:
        return None
    try:
        return int(v.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


def url_host(value: str) -> list[str]:
    hosts = []
    for part in value.split(","):
        part = part.strip()
        if "://" in part:
            h = urlparse(part).hostname
            if h:
                hosts.append(h)
    return hosts


# ------------------------------------------------------------------------------ compose


def check_nats_credentials(where: str, env: dict[str, str], r: Report) -> None:
    """A service that connects to NATS does so as a user with a password (docs/security.md)."""
    if "SYNERGAI_NATS__URL" not in env:
        return
    if not env.get("SYNERGAI_NATS__USER") or "SYNERGAI_NATS__PASSWORD" not in env:
        r.error(f"{where}: connects to NATS without credentials (set SYNERGAI_NATS__USER and "
                "SYNERGAI_NATS__PASSWORD; the NATS servers refuse anonymous connections)")


JS_DOMAIN_ENV = "SYNERGAI_NATS__JETSTREAM_DOMAIN"
# The services whose JetStream streams are per site (work queue, reply claims): each names the
# JetStream domain of the site it runs at. The store names none (the outcome stream is the hub's,
# through the plain `$JS.API`).
SITE_JS_BINARIES = ("synergai-intake", "synergai-scheduler", "synergai-worker")


def nats_conf_domain(text: str) -> str | None:
    """The JetStream domain a NATS server config runs: None without JetStream, "" with no domain."""
    m = re.search(r"^jetstream\s*\{(.*?)^\}", text, re.M | re.S)
    if not m:
        return None
    d = re.search(r"^\s*domain\s*:\s*[\"']?([\w-]+)", m.group(1), re.M)
    return d.group(1) if d else ""


def check_js_domain(where: str, b: "Binary", env: dict[str, str], server_domains: dict[str, str | None],
                    r: Report) -> None:
    """An intake, scheduler or worker names the JetStream domain of the NATS server it connects to
    (its site's: `$JS.<domain>.API`, subjects `...sched.requests.<domain>.*`, `...claims.<domain>.*`);
    the store names none."""
    got = env.get(JS_DOMAIN_ENV)
    if b.name == "synergai-store":
        if got:
            r.error(f"{where}: {JS_DOMAIN_ENV}={got!r}: the store uses the hub's JetStream through the plain "
                    "$JS.API; set no domain")
        return
    if b.name not in SITE_JS_BINARIES:
        return
    for host in url_host(env.get("SYNERGAI_NATS__URL", "")):
        host = host.split(".")[0]
        if host not in server_domains:
            continue
        want = server_domains[host]
        if want is None:
            r.error(f"{where}: connects to {host}, which runs no JetStream (each site's NATS server runs its "
                    "own, in a domain named after the site)")
        elif (got or "") != want:
            r.error(f"{where}: {JS_DOMAIN_ENV}={got!r}, but {host}, the NATS server it connects to, runs "
                    f"JetStream domain {want!r} (a service names its own site's domain)")


def check_compose_secrets(raw: str, r: Report) -> None:
    """Passwords and tokens in compose.yaml are interpolated from the environment, never literal
    (the PostgreSQL password's obviously-dev default excepted)."""
    for n, line in enumerate(raw.splitlines(), 1):
        m = re.match(r"\s*(\w*(?:PASSWORD|TOKEN)\w*):\s*(.+)$", line)
        if m and "${" not in m.group(2):
            r.error(f"compose/compose.yaml:{n}: {m.group(1)} has a literal value; interpolate it "
                    "from the environment (compose/.env)")


def check_compose(ws: Workspace, compose_bin: str, r: Report) -> None:
    compose_file = ws.deploy / "compose" / "compose.yaml"
    print(f"compose: {compose_file.relative_to(ws.deploy)} through `docker-compose config`", flush=True)
    cmd = [compose_bin, "-f", str(compose_file), "--profile", "tools", "--profile", "observability", "config"]
    # Secrets the compose file requires (`${VAR:?...}`) get placeholders here; compose/.env is
    # not read (no real secret is needed, nor picked up, to validate).
    raw = compose_file.read_text()
    required = sorted(set(re.findall(r"\$\{(\w+):\?", raw)))
    env = {k: v for k, v in os.environ.items() if k not in required}
    env.update({k: f"validate-{k.lower()}" for k in required})
    p = subprocess.run(cmd + [], capture_output=True, text=True, cwd=compose_file.parent, env=env)
    check_compose_secrets(raw, r)
    if p.returncode != 0:
        r.error(f"compose/compose.yaml rejected by docker-compose config:\n{p.stderr.strip() or p.stdout.strip()}")
        return
    cfg = yaml.safe_load(p.stdout)
    services = cfg.get("services", {})
    r.ok(f"docker-compose config: {len(services)} services ({', '.join(services)})")

    def nets(svc: dict) -> set[str]:
        n = svc.get("networks") or {"default": None}
        return set(n if isinstance(n, dict) else n)

    def mounts(svc: dict) -> dict[str, str]:
        """Container path -> host path of a service's bind mounts."""
        out = {}
        for v in svc.get("volumes") or []:
            if isinstance(v, str):
                parts = v.split(":")
                src, dst = parts[0], parts[1] if len(parts) > 1 else ""
            else:
                src, dst = v.get("source", ""), v.get("target", "")
            out[dst] = src
        return out

    # NATS servers (a service running a nats image with a mounted config) and their JetStream domains.
    server_domains: dict[str, str | None] = {}
    for name, svc in services.items():
        if re.match(r"(.*/)?nats:", svc.get("image", "")):
            args = svc.get("command") or []
            args = args.split() if isinstance(args, str) else args
            conf = args[args.index("-c") + 1] if "-c" in args[:-1] else "/etc/nats/nats.conf"
            src = mounts(svc).get(conf)
            path = Path(src) if src else None
            if path is not None and not path.is_absolute():
                path = compose_file.parent / path
            if path is None or not path.is_file():
                r.error(f"compose service {name}: its NATS config {conf} is not a mounted file")
                continue
            server_domains[name] = nats_conf_domain(path.read_text())
    scheduler_ids: dict[str, str] = {}

    synergai = 0
    for name, svc in services.items():
        where = f"compose service {name}"
        env = {k: "" if v is None else str(v) for k, v in (svc.get("environment") or {}).items()}
        image = svc.get("image", "")
        # Hosts a service is told to reach must be services on a network it shares.
        for k, v in env.items():
            if k.endswith("_URL") or k.endswith("_ENDPOINT"):
                for host in url_host(v):
                    if host in ("localhost", "127.0.0.1"):
                        continue
                    if host not in services:
                        r.error(f"{where}: {k} points at {host!r}, which is no service")
                    elif not nets(svc) & nets(services[host]):
                        r.error(f"{where}: {k} points at {host!r}, which shares no network with it "
                                f"({sorted(nets(svc))} vs {sorted(nets(services[host]))})")
        for dep in (svc.get("depends_on") or {}):
            if dep not in services:
                r.error(f"{where}: depends on unknown service {dep!r}")
        if not re.search(r"(^|/)synergai-", image):
            continue
        synergai += 1
        b = ws.image_binary(where, image)
        if b is None:
            continue
        build = svc.get("build")
        if build:
            if isinstance(build, dict):
                tgt = build.get("target")
                if Path(build.get("dockerfile", "")).name != "Dockerfile" or tgt is None:
                    r.error(f"{where}: build must name docker/Dockerfile and a target")
                elif f"synergai-{tgt}" != image.split(":")[0].rsplit("/", 1)[-1]:
                    r.error(f"{where}: builds target {tgt!r} but is tagged {image!r}")
        else:
            r.error(f"{where}: a SynergAI image without a build section (compose would try to pull {image!r})")
        cmd_args = svc.get("command") or []
        if isinstance(cmd_args, str):
            cmd_args = cmd_args.split()
        ws.check_command(where, b, cmd_args)
        for k in env:
            ws.check_env(where, b, k)
        check_nats_credentials(where, env, r)
        check_js_domain(where, b, env, server_domains, r)
        if b.name == "synergai-scheduler" and not (svc.get("profiles") or []):
            sid = env.get("SYNERGAI_SCHEDULER__ID", "(default)")
            if sid in scheduler_ids:
                r.error(f"{where}: the same SYNERGAI_SCHEDULER__ID {sid!r} as {scheduler_ids[sid]} (each scheduler "
                        "needs its own id)")
            scheduler_ids[sid] = name
        # A mounted config file named by SYNERGAI_CONFIG.
        if ENV_CONFIG_FILE in env:
            src = mounts(svc).get(env[ENV_CONFIG_FILE])
            mounted = Path(src) if src is not None else None
            if mounted is None:
                r.error(f"{where}: SYNERGAI_CONFIG={env[ENV_CONFIG_FILE]} is not a mounted file")
            elif not mounted.is_file():
                r.error(f"{where}: config file {mounted} does not exist")
            else:
                ws.check_toml(f"{where} ({mounted.name})", b, mounted.read_text())
        # The health check probes the port the service listens on.
        hc = svc.get("healthcheck") or {}
        port = listen_port(env) or listen_port(ws.targets.get(image.split(":")[0].rsplit("/", 1)[-1].removeprefix("synergai-"), Target("")).env)
        test = " ".join(hc.get("test", [])) if isinstance(hc.get("test"), list) else str(hc.get("test", ""))
        if not hc.get("disable") and test != "NONE" and b.name != "synergai-loadgen":
            if not test:
                r.error(f"{where}: no healthcheck")
            elif "SYNERGAI_HTTP__LISTEN" not in test and (port is None or f":{port}/" not in test):
                r.error(f"{where}: healthcheck {test!r} does not probe its listen port {port}")
    r.ok(f"compose: {synergai} SynergAI services checked against the workspace; NATS servers' JetStream domains: "
         + ", ".join(f"{k} {v!r}" for k, v in sorted(server_domains.items())))

    # Prometheus scrape targets: a service, on the port it listens on.
    prom = ws.deploy / "compose" / "prometheus" / "prometheus.yml"
    if prom.exists():
        pcfg = yaml.safe_load(prom.read_text())
        n = 0
        for job in pcfg.get("scrape_configs", []):
            for sc in job.get("static_configs", []):
                for t in sc.get("targets", []):
                    host, _, port = t.partition(":")
                    n += 1
                    svc = services.get(host)
                    if svc is None:
                        r.error(f"prometheus.yml job {job['job_name']}: target {t} is no compose service")
                        continue
                    env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
                    lp = listen_port(env)
                    if lp is not None and str(lp) != port:
                        r.error(f"prometheus.yml job {job['job_name']}: target {t}, but {host} listens on {lp}")
        r.ok(f"prometheus.yml: {n} scrape targets match services and ports")

    dash = ws.deploy / "compose" / "grafana" / "dashboards" / "synergai.json"
    if dash.exists():
        known = rust_metric_names(ws.src)
        d = json.loads(dash.read_text())
        missing: dict[str, list[str]] = {}
        for p in d.get("panels", []):
            for t in p.get("targets", []):
                for m in re.findall(r"\b(synergai_[a-z0-9_]+)", t.get("expr", "")):
                    base = re.sub(r"_(bucket|count|sum)$", "", m)
                    if m not in known and base not in known:
                        missing.setdefault(base, []).append(p["title"])
        if missing:
            for m, panels in sorted(missing.items()):
                r.warn(f"dashboard: metric {m} is not in the Rust source yet (panel: {panels[0]})")
        else:
            r.ok("dashboard: every metric exists in the Rust source")


# ------------------------------------------------------------------------------ kubernetes


def check_k8s(ws: Workspace, kubectl: list[str], validate_bin: str, versions: list[str], r: Report) -> None:
    k8s = ws.deploy / "k8s"
    dirs = sorted({p.parent for p in k8s.rglob("kustomization.yaml")})
    if not dirs:
        r.error("k8s/: no kustomization.yaml")
        return
    overlays = [d for d in dirs if d.parent.name == "overlays"]
    if not overlays:
        r.error("k8s/overlays: no overlay")
    for d in dirs:
        rel = d.relative_to(ws.deploy)
        print(f"k8s: {rel}", flush=True)
        p = subprocess.run(kubectl + [str(d)], capture_output=True, text=True)
        if p.returncode != 0:
            r.error(f"{rel}: kustomize failed:\n{p.stderr.strip()}")
            continue
        docs = [x for x in yaml.safe_load_all(p.stdout) if x]
        r.ok(f"kustomize rendered {len(docs)} objects")
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(p.stdout)
            rendered = f.name
        for v in versions:
            vp = subprocess.run([validate_bin, "--strict", "--quiet", "-k", v, rendered], capture_output=True, text=True)
            out = (vp.stdout + vp.stderr).strip()
            if vp.returncode != 0:
                r.error(f"{rel}: schema validation against Kubernetes {v} failed:\n{out.replace(rendered, str(rel))}")
            else:
                r.ok(f"kubernetes-validate --strict, Kubernetes {v}: {len(docs)} objects valid")
        Path(rendered).unlink()
        check_rendered(ws, rel, docs, dev=d.name == "dev", r=r)


def check_rendered(ws: Workspace, rel: Path, docs: list[dict], dev: bool, r: Report) -> None:
    by_kind: dict[str, dict[str, dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    services = set(by_kind.get("Service", {}))
    cms = by_kind.get("ConfigMap", {})
    pdb_selectors = [d["spec"]["selector"].get("matchLabels", {}) for d in by_kind.get("PodDisruptionBudget", {}).values()]
    hpa_targets = {d["spec"]["scaleTargetRef"]["name"] for d in by_kind.get("HorizontalPodAutoscaler", {}).values()}
    # NATS servers (a Service selecting pods of a nats image with a ConfigMap's nats.conf) and
    # their JetStream domains.
    server_domains: dict[str, str | None] = {}
    for sname, svc in by_kind.get("Service", {}).items():
        sel = svc.get("spec", {}).get("selector") or {}
        if not sel:
            continue
        for kind in ("StatefulSet", "Deployment"):
            for obj in by_kind.get(kind, {}).values():
                tmpl = obj["spec"]["template"]
                if not all(tmpl["metadata"].get("labels", {}).get(k) == v for k, v in sel.items()):
                    continue
                if not any(re.match(r"(.*/)?nats:", c.get("image", "")) for c in tmpl["spec"].get("containers", [])):
                    continue
                for v in tmpl["spec"].get("volumes", []):
                    conf = cms.get(v.get("configMap", {}).get("name"), {}).get("data", {}).get("nats.conf")
                    if conf is not None:
                        server_domains[sname] = nats_conf_domain(conf)
    scheduler_ids: dict[str, str] = {}
    n = 0
    for kind in ("Deployment", "StatefulSet", "Job"):
        for name, obj in by_kind.get(kind, {}).items():
            pod = obj["spec"]["template"]["spec"]
            pod_labels = obj["spec"]["template"]["metadata"].get("labels", {})
            where = f"{rel}: {kind} {name}"
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            for c in pod.get("containers", []):
                cw = f"{where} container {c['name']}"
                res = c.get("resources", {})
                if not res.get("requests") or not res.get("limits"):
                    r.error(f"{cw}: needs resource requests and limits")
                env: dict[str, str] = {}
                for ef in c.get("envFrom", []):
                    ref = ef.get("configMapRef", {}).get("name")
                    if ref:
                        if ref not in cms:
                            r.error(f"{cw}: envFrom ConfigMap {ref!r} is not in the rendered output")
                        else:
                            env.update({k: str(v) for k, v in cms[ref].get("data", {}).items()})
                for e in c.get("env", []):
                    env[e["name"]] = str(e.get("value", ""))
                    ref = e.get("valueFrom", {}).get("configMapKeyRef")
                    if ref and ref["name"] not in cms:
                        r.error(f"{cw}: env {e['name']} refers to missing ConfigMap {ref['name']!r}")
                for k, v in env.items():
                    if k.endswith("_URL") or k.endswith("_ENDPOINT"):
                        for host in url_host(v):
                            if host.split(".")[0] not in services and host not in ("localhost", "127.0.0.1"):
                                r.error(f"{cw}: {k} points at {host!r}, which is no Service here")
                image = c.get("image", "")
                if not re.search(r"(^|/)synergai-", image):
                    continue
                n += 1
                b = ws.image_binary(cw, image)
                if b is None:
                    continue
                ws.check_command(cw, b, c.get("args") or [])
                if c.get("command"):
                    r.error(f"{cw}: overrides the image's entrypoint ({c['command']!r}); use args")
                for k in env:
                    ws.check_env(cw, b, k)
                check_nats_credentials(cw, env, r)
                check_js_domain(cw, b, env, server_domains, r)
                if b.name == "synergai-scheduler" and kind == "Deployment":
                    # Each scheduler needs its own id: its pod name, or a literal one of a single replica.
                    ref = next((e for e in c.get("env", []) if e["name"] == "SYNERGAI_SCHEDULER__ID"), None)
                    from_pod = (ref or {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name"
                    if not from_pod:
                        sid = (ref or {}).get("value") or (f"from {ref['valueFrom']}" if ref else "(default)")
                        if obj["spec"].get("replicas", 1) != 1 or name in hpa_targets:
                            r.error(f"{cw}: SYNERGAI_SCHEDULER__ID {sid!r} is shared by its replicas (use the pod "
                                    "name: valueFrom.fieldRef.fieldPath metadata.name)")
                        if sid in scheduler_ids:
                            r.error(f"{cw}: the same SYNERGAI_SCHEDULER__ID {sid!r} as {scheduler_ids[sid]} (each "
                                    "scheduler needs its own id)")
                        scheduler_ids[sid] = name
                for e in c.get("env", []):
                    if re.search(r"PASSWORD|TOKEN|SECRET", e["name"]) and "value" in e:
                        r.error(f"{cw}: {e['name']} has a literal value; take it from a Secret (valueFrom)")
                if ENV_CONFIG_FILE in env:
                    cfg_path = Path(env[ENV_CONFIG_FILE])
                    found = None
                    for m in c.get("volumeMounts", []):
                        if cfg_path.parent == Path(m["mountPath"]) or cfg_path == Path(m["mountPath"]):
                            vol = volumes.get(m["name"], {})
                            cm = vol.get("configMap", {}).get("name")
                            if cm in cms:
                                key = m.get("subPath") or cfg_path.name
                                found = cms[cm].get("data", {}).get(key)
                                if found is None:
                                    r.error(f"{cw}: ConfigMap {cm} has no key {key!r} for SYNERGAI_CONFIG")
                            elif cm:
                                r.error(f"{cw}: mounts missing ConfigMap {cm!r}")
                    if found is None:
                        r.error(f"{cw}: SYNERGAI_CONFIG={cfg_path} is not a mounted ConfigMap file")
                    else:
                        ws.check_toml(f"{cw} ({cfg_path.name})", b, found)
                if kind == "Job" or b.name == "synergai-loadgen":
                    continue
                # Long-running services: probes on the port they listen on.
                port = listen_port(env)
                ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
                for probe in ("livenessProbe", "readinessProbe"):
                    pr = c.get(probe)
                    if not pr:
                        r.error(f"{cw}: no {probe}")
                        continue
                    pp = pr.get("httpGet", {}).get("port")
                    pp = ports.get(pp, pp)
                    if port is not None and pp != port:
                        r.error(f"{cw}: {probe} on port {pp}, but SYNERGAI_HTTP__LISTEN is port {port}")
                if b.name == "synergai-worker":
                    sel = pod.get("nodeSelector", {})
                    if sel.get("kubernetes.io/arch") not in ("amd64", "arm64"):
                        r.error(f"{where}: a worker Deployment must select kubernetes.io/arch (amd64 or arm64)")
                    if not dev and "synergai.io/site" not in sel:
                        r.error(f"{where}: a worker Deployment must select its site (synergai.io/site)")
                    arch = sel.get("kubernetes.io/arch")
                    dc = env.get("SYNERGAI_WORKER__DEVICE_CLASS", "")
                    want = {"amd64": "x86_64", "arm64": "aarch64"}.get(arch or "", "?")
                    if not dc.startswith(want + "-"):
                        r.error(f"{where}: device class {dc!r} does not name the node architecture {want}")
            if kind in ("Deployment",) and any(
                c.get("image", "").rsplit("/", 1)[-1].startswith("synergai-") for c in pod.get("containers", [])
            ):
                if not any(sel and all(pod_labels.get(k) == v for k, v in sel.items()) for sel in pdb_selectors):
                    r.error(f"{where}: no PodDisruptionBudget selects its pods")
    for t in ("intake", "scheduler"):
        if t not in hpa_targets:
            r.error(f"{rel}: no HorizontalPodAutoscaler for {t}")
    for t in hpa_targets:
        if t not in by_kind.get("Deployment", {}):
            r.error(f"{rel}: HorizontalPodAutoscaler targets missing Deployment {t}")
    secrets = by_kind.get("Secret", {})
    for name, s in secrets.items():
        if s.get("metadata", {}).get("labels", {}).get("synergai.io/dev-only") != "true":
            r.error(f"{rel}: Secret {name} with a value in the repository (only the dev overlay may have one, "
                    "labelled synergai.io/dev-only)")
    r.ok(f"{n} SynergAI containers checked against the workspace; NATS servers' JetStream domains: "
         + ", ".join(f"{k} {v!r}" for k, v in sorted(server_domains.items())))


# ------------------------------------------------------------------------------ NATS


def free_port() -> int:
    import socket
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return sk.getsockname()[1]


def nats_env_refs(confs: list[Path]) -> dict[str, str]:
    """Placeholders for the environment variables NATS configs reference (`$NATS_...`)."""
    names: set[str] = set()
    for c in confs:
        names |= set(re.findall(r"(?<![\w\"])\$(NATS_[A-Z0-9_]+)", c.read_text()))
    return {n: f"validate{n.lower().replace('_', '')}" for n in sorted(names)}


# The per-site streams (work queue, reply claims) carry their JetStream domain in their names
# (`SYNERGAI_REQUESTS_<domain>`, plain without a domain): acknowledgements (`$JS.ACK.<stream>...`)
# and direct gets (`$JS.API.DIRECT.GET.<stream>`) name the stream but not the domain, so two
# domains joined by a leaf node must not have streams of one name.
SITE_STREAMS = ("SYNERGAI_REQUESTS", "SYNERGAI_REPLIES")
STREAM_TOKEN = re.compile(r"(SYNERGAI_(?:REQUESTS|REPLIES|OUTCOMES))((?:_[A-Za-z0-9-]+)?)")


def permission_rules(text: str) -> list[tuple[str, str, str]]:
    """(PERMS_ variable, publish|subscribe, subject) of every quoted subject of a permissions file."""
    out = []
    user = direction = ""
    for line in text.splitlines():
        if re.match(r"\s*(#|//)", line):
            continue
        m = re.match(r"(PERMS_\w+)\s*[:=]", line)
        if m:
            user, direction = m.group(1), ""
        m = re.search(r"\b(publish|subscribe)\s*[:=]", line)
        if m:
            direction = m.group(1)
        for subject in re.findall(r'"([^"]*)"', line):
            out.append((user, direction, subject))
    return out


def check_stream_permissions(files: list[Path], domains: list[str], r: Report) -> None:
    """Every permission rule that names the request or the claim stream is there for the plain name
    and for each JetStream domain's name (`SYNERGAI_REQUESTS_<domain>`, for every domain a NATS
    config of the deployment runs), and every JetStream rule names a SynergAI stream (never a
    wildcard for it: that would open every stream of every site)."""
    wanted = [""] + [f"_{d}" for d in domains]
    rules, errors = 0, len(r.errors)
    for f in files:
        where = f"compose/nats/{f.name}"
        # (user, direction, template, stream) -> domain suffixes present
        groups: dict[tuple[str, str, str, str], set[str]] = {}
        for user, direction, subject in permission_rules(f.read_text()):
            if not subject.startswith("$JS."):
                continue
            if subject in ("$JS.API.INFO", "$JS.*.API.INFO"):
                continue
            tokens = subject.split(".")
            hits = [(i, m) for i, tok in enumerate(tokens) if (m := STREAM_TOKEN.fullmatch(tok))]
            if not hits:
                r.error(f"{where}: {user} may {direction} {subject!r}, a JetStream rule that names no SynergAI "
                        "stream (a wildcard, or no name, for the stream opens every stream of every site)")
                continue
            for i, m in hits:
                if m.group(1) not in SITE_STREAMS:
                    continue
                template = ".".join(tokens[:i] + ["<stream>"] + tokens[i + 1:])
                groups.setdefault((user, direction, template, m.group(1)), set()).add(m.group(2))
                rules += 1
        lacking: dict[tuple[str, str, str], list[str]] = {}
        for (user, direction, template, stream), have in groups.items():
            for s in wanted:
                if s not in have:
                    lacking.setdefault((user, direction, stream + s), []).append(template)
        for (user, direction, name), templates in sorted(lacking.items()):
            r.error(f"{where}: {user}: {len(templates)} {direction} rule(s) naming the request or claim stream "
                    f"lack the name {name} ({', '.join(templates[:3])}{', ...' if len(templates) > 3 else ''}); "
                    "each is there for the plain name and for each JetStream domain of the NATS configs "
                    f"({', '.join(domains)}): streams carry their domain in their names")
    if len(r.errors) == errors:
        r.ok(f"permissions: the {rules} rules naming the request or claim stream are there for the plain names and "
             f"those of domains {', '.join(domains)} (SYNERGAI_REQUESTS_<domain>, SYNERGAI_REPLIES_<domain>); "
             "every JetStream rule names a SynergAI stream")


def check_nats(ws: Workspace, nats_server: str | None, r: Report) -> None:
    """Every NATS config parses (`nats-server -t`, its environment variables set to placeholders);
    compose and k8s ship the same NATS files; the permission rules name the request and claim
    streams of every JetStream domain (check_stream_permissions); then the compose hub and one leaf
    node run on loopback ports with their users and permissions, acting as the services (streams
    named as they name them, `SYNERGAI_REQUESTS_<domain>`): the hub's scheduler and intake use the
    hub's JetStream (domain hub) and a worker of the leaf node uses it as an edge worker does; the
    edge site's intake, scheduler and worker serve requests through the leaf node's own JetStream
    (domain edge-a), acknowledging while the hub's scheduler holds messages of the same sequence
    numbers (neither domain's acknowledgements or direct gets touch the other's stream), also with
    the hub stopped (the uplink cut); anonymous connections and forbidden publishes are refused."""
    compose_dir, k8s_dir = ws.deploy / "compose" / "nats", ws.deploy / "k8s" / "base" / "nats"
    # Server configs; the permission files are parts they include, checked through them.
    confs = [c for c in sorted(compose_dir.glob("*.conf")) + sorted((ws.deploy / "k8s").rglob("*.conf"))
             if not c.name.startswith("permissions-")]
    print("nats: server configs", flush=True)
    for c in sorted(compose_dir.glob("*.conf")):
        twin = k8s_dir / c.name
        if not twin.exists():
            r.error(f"compose/nats/{c.name} has no copy in k8s/base/nats/ (the two ship the same NATS files)")
        elif twin.read_text() != c.read_text():
            r.error(f"k8s/base/nats/{c.name} differs from compose/nats/{c.name} (the two ship the same NATS files)")
    domains: list[str] = []
    for c in confs:
        d = nats_conf_domain(c.read_text())
        if d and d not in domains:
            domains.append(d)
    check_stream_permissions(sorted(compose_dir.glob("permissions-*.conf")), domains, r)
    for c in sorted(compose_dir.glob("*.conf")):
        text = c.read_text()
        if re.search(r"^\s*password\s*:\s*[\"']", text, re.M) or re.search(r"^\s*token\s*:", text, re.M):
            r.error(f"compose/nats/{c.name}: a literal password or token (use $NATS_PASSWORD_... from the environment)")
        if re.search(r"^\s*[{\s]*url\s*:\s*[\"']?nats-leaf://", text, re.M):
            r.error(f"compose/nats/{c.name}: the leaf node's hub URL is literal (it carries credentials: use $NATS_HUB_LEAF_URL)")
    if not nats_server:
        r.warn("nats-server not installed: NATS config files not checked (apt-get install nats-server)")
        return
    placeholders = nats_env_refs(sorted(compose_dir.glob("*.conf")) + sorted((ws.deploy / "k8s").rglob("*.conf")))
    placeholders.setdefault("NATS_HUB_LEAF_URL", "nats-leaf://leaf:validate@127.0.0.1:7422")
    penv = {**os.environ, **placeholders}
    for c in confs:
        p = subprocess.run([nats_server, "-t", "-c", str(c)], capture_output=True, text=True, env=penv)
        if p.returncode != 0:
            r.error(f"{c.relative_to(ws.deploy)}: rejected by nats-server -t: {(p.stderr or p.stdout).strip()}")
    r.ok(f"nats-server -t: {len(confs)} config files valid")
    hub_conf, leaf_conf = compose_dir / "hub.conf", compose_dir / "leaf-edge-a.conf"
    if not hub_conf.exists() or not leaf_conf.exists():
        return
    try:
        import asyncio
        import nats  # noqa: F401
    except ImportError:
        r.warn("nats-py missing: hub + leaf-node JetStream smoke test skipped")
        return
    import shutil
    import signal
    import time
    import urllib.request
    tmp = Path(tempfile.mkdtemp(prefix="validate-deploy-nats-"))
    hp, hm, hl, lp, lm = (free_port() for _ in range(5))
    for f in compose_dir.glob("permissions-*.conf"):
        shutil.copy(f, tmp / f.name)
    hub = (hub_conf.read_text().replace("0.0.0.0:4222", f"127.0.0.1:{hp}").replace("0.0.0.0:8222", f"127.0.0.1:{hm}")
           .replace("0.0.0.0:7422", f"127.0.0.1:{hl}").replace("/data/jetstream", str(tmp / "js-hub")))
    leaf = (leaf_conf.read_text().replace("0.0.0.0:4222", f"127.0.0.1:{lp}").replace("0.0.0.0:8222", f"127.0.0.1:{lm}")
            .replace("/data/jetstream", str(tmp / "js-edge-a")))
    (tmp / "hub.conf").write_text(hub)
    (tmp / "leaf.conf").write_text(leaf)
    pw = {k: v for k, v in placeholders.items() if k.startswith("NATS_PASSWORD_")}
    senv = {**os.environ, **pw,
            "NATS_HUB_LEAF_URL": f"nats-leaf://leaf-edge-a:{pw.get('NATS_PASSWORD_LEAF_EDGE_A', 'x')}@127.0.0.1:{hl}"}
    procs = []
    try:
        for name in ("hub", "leaf"):
            log = open(tmp / f"{name}.log", "w")
            procs.append(subprocess.Popen([nats_server, "-c", str(tmp / f"{name}.conf")], stdout=log, stderr=log,
                                          env=senv))
            time.sleep(0.5)

        def leafnodes() -> int:
            with urllib.request.urlopen(f"http://127.0.0.1:{lm}/leafz", timeout=1) as resp:
                return int(json.loads(resp.read()).get("leafnodes", 0))

        async def smoke() -> str:
            import json as _json
            import nats as _nats
            from nats.js.api import RetentionPolicy, StorageType, StreamConfig

            refusals: list[str] = []
            conns = []

            def on_error(who: str):
                async def cb(e: Exception) -> None:
                    refusals.append(f"{who}: {e}")
                return cb

            async def connect(port: int, server: str, user: str):
                c = await _nats.connect(f"nats://127.0.0.1:{port}", connect_timeout=1, allow_reconnect=False,
                                        max_reconnect_attempts=0, error_cb=on_error(f"{user}@{server}"),
                                        user=user, password=pw.get(f"NATS_PASSWORD_{user.upper()}", ""))
                conns.append(c)
                return c

            for _ in range(50):
                try:
                    ha = await connect(hp, "hub", "admin")
                    lw = await connect(lp, "leaf-edge-a", "worker")
                    break
                except Exception:
                    await asyncio.sleep(0.1)
            else:
                return "cannot connect to the hub (as admin) and leaf-edge-a (as worker)"
            # The users each site's services connect as.
            users = {}
            for port, server, user in ((hp, "hub", "intake"), (hp, "hub", "scheduler"), (hp, "hub", "worker"),
                                       (lp, "leaf-edge-a", "client"), (lp, "leaf-edge-a", "intake"),
                                       (lp, "leaf-edge-a", "scheduler")):
                try:
                    users[(server, user)] = await connect(port, server, user)
                except Exception as e:
                    return f"cannot connect to {server} as {user}: {type(e).__name__}: {e}"
            hi, hs, hw = users[("hub", "intake")], users[("hub", "scheduler")], users[("hub", "worker")]
            cc, li, ls = (users[("leaf-edge-a", u)] for u in ("client", "intake", "scheduler"))

            async def quiet(_e: Exception) -> None:
                pass
            for port, server in ((hp, "the hub"), (lp, "leaf-edge-a")):
                try:
                    anon = await _nats.connect(f"nats://127.0.0.1:{port}", connect_timeout=1, allow_reconnect=False,
                                               max_reconnect_attempts=0, error_cb=quiet)
                    await anon.close()
                    return f"{server} accepts a connection without credentials"
                except Exception:
                    pass

            async def api(conn, subject: str, body: bytes = b"") -> dict:
                return _json.loads((await conn.request(subject, body, timeout=2)).data)

            # The per-site streams carry their domain in their names, as the services name them
            # (`SYNERGAI_REQUESTS_<domain>`): acknowledgements and direct gets name a stream but no
            # domain, so the hub's and edge-a's must not share one.
            REQ, REP, CONSUMER = "SYNERGAI_REQUESTS", "SYNERGAI_REPLIES", "synergai-scheduler"

            def work_queue(domain: str) -> StreamConfig:
                return StreamConfig(name=f"{REQ}_{domain}", subjects=[f"synergai.v1.sched.requests.{domain}.*"],
                                    retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE,
                                    allow_direct=True)

            def claims(domain: str) -> StreamConfig:
                return StreamConfig(name=f"{REP}_{domain}", subjects=[f"synergai.v1.claims.{domain}.*"],
                                    max_msgs_per_subject=1, storage=StorageType.FILE)

            async def direct_get(conn, domain: str, seq: int, want: bytes, who: str) -> str:
                """A direct get in `domain` of its request stream's message `seq` returns `want`, from
                that domain's stream."""
                stream = f"{REQ}_{domain}"
                got = await conn.request(f"$JS.{domain}.API.DIRECT.GET.{stream}", _json.dumps({"seq": seq}).encode(),
                                         timeout=2)
                from_stream = (got.headers or {}).get("Nats-Stream")
                if got.data != want or from_stream != stream:
                    return (f"direct get (domain {domain}) of message {seq} by {who} returned {len(got.data)} bytes "
                            f"from stream {from_stream!r}, not the {len(want)} bytes stored in {stream}")
                return ""

            async def stream_state(conn, domain: str) -> dict:
                return (await api(conn, f"$JS.{domain}.API.STREAM.INFO.{REQ}_{domain}")).get("state", {})

            async def ack_pending(conn, domain: str) -> int | None:
                return (await api(conn, f"$JS.{domain}.API.CONSUMER.INFO.{REQ}_{domain}.{CONSUMER}")).get(
                    "num_ack_pending")

            async def serve_edge(n: int, phase: str, before_ack=None, after_ack=None, uplink: bool = True) -> str:
                """One request through edge-a's JetStream: its intake stores it, its worker reads the
                body (and, with the uplink up, so does a worker at the hub, as one that edge-a's
                scheduler places on) and claims the reply, its scheduler takes and acknowledges it
                (`before_ack` and `after_ack`: checks while the scheduler holds it unacknowledged,
                and after)."""
                body = f"e{n}".encode() * 500
                ack = await li.jetstream(domain="edge-a").publish("synergai.v1.sched.requests.edge-a.m", body)
                if ack.stream != f"{REQ}_edge-a" or ack.domain != "edge-a":
                    return f"{phase}: the site's intake's request was stored by {ack}, not edge-a's {REQ}_edge-a"
                readers = [(lw, "the site's worker")] + ([(hw, "a worker at the hub")] if uplink else [])
                for conn, who in readers:
                    why = await direct_get(conn, "edge-a", ack.seq, body, who)
                    if why:
                        return f"{phase}: {why}"
                c = await lw.jetstream(domain="edge-a").publish(
                    f"synergai.v1.claims.edge-a.r{n}", b"c", headers={"Nats-Expected-Last-Subject-Sequence": "0"})
                if c.stream != f"{REP}_edge-a" or c.domain != "edge-a":
                    return f"{phase}: the site's worker's reply claim was stored by {c}, not edge-a's {REP}_edge-a"
                msgs = await edge_sub.fetch(1, timeout=2)
                if msgs[0].data != body:
                    return f"{phase}: the site's scheduler took {len(msgs[0].data)} bytes, not the request just stored"
                if before_ack:
                    why = await before_ack()
                    if why:
                        return f"{phase}: {why}"
                await msgs[0].ack_sync(timeout=2)
                left = await stream_state(ls, "edge-a")
                if left.get("messages") != 0:
                    return f"{phase}: the site's scheduler's acknowledgement left the work queue with {left}"
                if after_ack:
                    why = await after_ack()
                    if why:
                        return f"{phase}: {why}"
                return ""

            phase = "waiting for the leaf connection"
            try:
                for _ in range(50):
                    try:
                        await lw.request("$JS.hub.API.INFO", b"", timeout=0.5)
                        break
                    except Exception:
                        await asyncio.sleep(0.1)
                # The hub's domain: its scheduler makes the streams, its intake stores requests, and
                # a worker of the leaf node reads a body and claims the reply there.
                phase = "the hub's JetStream (domain hub)"
                jsh = hs.jetstream(domain="hub")
                await jsh.add_stream(work_queue("hub"))
                await jsh.add_stream(claims("hub"))
                hub_bodies = [b"x" * 700_000, b"y" * 300]
                hub_seqs = []
                for body in hub_bodies:
                    ack = await hi.jetstream(domain="hub").publish("synergai.v1.sched.requests.hub.m", body)
                    if ack.stream != f"{REQ}_hub" or ack.domain != "hub":
                        return f"{phase}: the hub's intake's request was stored by {ack}, not the hub's {REQ}_hub"
                    hub_seqs.append(ack.seq)
                info = await api(lw, f"$JS.hub.API.STREAM.INFO.{REQ}_hub")
                if info.get("state", {}).get("messages") != 2:
                    return f"{phase}: stream info from the leaf: {info}"
                why = await direct_get(lw, "hub", hub_seqs[0], hub_bodies[0], "a worker of the leaf node (700 KB)")
                if why:
                    return f"{phase}: {why}"
                a2 = await lw.jetstream(domain="hub").publish("synergai.v1.claims.hub.r1", b"c",
                                                              headers={"Nats-Expected-Last-Subject-Sequence": "0"})
                if a2.stream != f"{REP}_hub" or a2.domain != "hub":
                    return f"{phase}: JetStream publish (a reply claim) from the leaf: {a2}"
                # The hub's scheduler takes both requests and holds them unacknowledged while edge-a's
                # scheduler acknowledges messages of the same sequence numbers in its own stream.
                hub_sub = await jsh.pull_subscribe("synergai.v1.sched.requests.hub.*", durable=CONSUMER,
                                                   stream=f"{REQ}_hub")
                hub_msgs = []
                while len(hub_msgs) < 2:
                    hub_msgs += await hub_sub.fetch(2 - len(hub_msgs), timeout=2)
                if [m.data for m in hub_msgs] != hub_bodies:
                    return f"{phase}: the hub's scheduler took other messages than the hub's intake stored"

                # The edge site's own domain: its scheduler makes the streams and its consumer.
                phase = "leaf-edge-a's own JetStream (domain edge-a)"
                try:
                    await ls.request("$JS.edge-a.API.INFO", b"", timeout=2)
                except Exception as e:
                    return f"no JetStream answers in domain edge-a at leaf-edge-a ({type(e).__name__}: {e})"
                jse = ls.jetstream(domain="edge-a")
                await jse.add_stream(work_queue("edge-a"))
                await jse.add_stream(claims("edge-a"))
                await lw.jetstream(domain="edge-a").stream_info(f"{REP}_edge-a")
                edge_sub = await jse.pull_subscribe("synergai.v1.sched.requests.edge-a.*", durable=CONSUMER,
                                                    stream=f"{REQ}_edge-a")

                async def hub_untouched(held: int) -> str:
                    """The hub's work queue still holds its `held` requests, taken and unacknowledged."""
                    state, pending = await stream_state(hs, "hub"), await ack_pending(hs, "hub")
                    if state.get("messages") != held or pending != held:
                        return (f"the hub's work queue holds {state.get('messages')} messages, {pending} of them "
                                f"unacknowledged, not its {held} taken ones: it captured an edge-a request, or an "
                                "acknowledgement in domain edge-a reached the hub's stream")
                    return await direct_get(lw, "hub", hub_seqs[0], hub_bodies[0], "a worker of the leaf node")

                # Request 1 of edge-a (sequence 1, as the hub's first): its acknowledgement leaves the
                # hub's two alone.
                why = await serve_edge(2, phase, after_ack=lambda: hub_untouched(2))
                if why:
                    return why

                async def hub_acks_second() -> str:
                    # Request 2 of edge-a (sequence 2) is taken and unacknowledged: the hub's
                    # scheduler acknowledges its own sequence 2, which leaves edge-a's alone.
                    await hub_msgs[1].ack_sync(timeout=2)
                    state = await stream_state(ls, "edge-a")
                    pending = await ack_pending(ls, "edge-a")
                    if state.get("messages") != 1 or pending != 1:
                        return (f"after the hub's scheduler acknowledged its request, edge-a's work queue holds "
                                f"{state.get('messages')} messages, {pending} unacknowledged, not its 1 taken one: "
                                "an acknowledgement in domain hub reached edge-a's stream")
                    return await hub_untouched(1)
                why = await serve_edge(3, phase, before_ack=hub_acks_second, after_ack=lambda: hub_untouched(1))
                if why:
                    return why
                await hub_msgs[0].ack_sync(timeout=2)
                left = await stream_state(hs, "hub")
                if left.get("messages") != 0:
                    return f"{phase}: the hub's scheduler's acknowledgements left its work queue with {left}"

                phase = "request-reply from the leaf to the hub"

                async def respond(m):
                    await m.respond(b"ok")
                await ha.subscribe("synergai.v1.store.profiles.table", cb=respond)
                await ha.flush()
                last = None
                answered = False
                for _ in range(50):
                    try:
                        if (await lw.request("synergai.v1.store.profiles.table", b"", timeout=0.5)).data == b"ok":
                            answered = True
                            break
                    except Exception as e:  # no responders until the interest crosses the leaf
                        last = e
                        await asyncio.sleep(0.1)
                if not answered:
                    return f"{phase} got no answer ({type(last).__name__}: {last})"
                # Refused: a client or a worker publishing to a worker's job subject.
                for who, conn in (("client", cc), ("worker", lw)):
                    refusals.clear()
                    await conn.publish("synergai.v1.workers.jobs.w1", b"forged")
                    await conn.flush()
                    for _ in range(20):
                        if refusals:
                            break
                        await asyncio.sleep(0.05)
                    if not any("ermissions" in x for x in refusals):
                        return f"a {who} of the leaf node may publish to a worker's job subject"
                refusals.clear()

                # The uplink cut (the hub stopped): the edge site keeps serving on its own.
                phase = "with the uplink cut (the hub stopped)"
                procs[0].send_signal(signal.SIGTERM)
                procs[0].wait(10)
                for _ in range(50):
                    try:
                        if leafnodes() == 0:
                            break
                    except Exception:
                        pass
                    await asyncio.sleep(0.1)
                else:
                    return f"{phase}: leaf-edge-a still lists a leaf connection"
                return await serve_edge(4, phase, uplink=False)
            except Exception as e:
                seen = f" (the servers refused: {'; '.join(refusals)})" if refusals else ""
                return f"{phase}: {type(e).__name__}: {e}{seen}"
            finally:
                for c in conns:
                    try:
                        await c.close()
                    except Exception:
                        pass

        why = asyncio.run(asyncio.wait_for(smoke(), 45))
        if why:
            logs = "\n".join((tmp / f"{n}.log").read_text()[-2000:] for n in ("hub", "leaf"))
            if "may publish to a worker's job subject" in why or "without credentials" in why:
                r.error(f"compose/nats: {why}")
            else:
                r.error(f"compose/nats: hub + leaf-edge-a on loopback: {why}\n{logs}")
        else:
            r.ok("hub + leaf-edge-a on loopback with their users, streams named per domain (SYNERGAI_REQUESTS_hub, "
                 "SYNERGAI_REQUESTS_edge-a, ...): in domain hub, the hub's scheduler makes the streams, its intake "
                 "stores requests, and from the leaf (as worker) stream info, a 700 KB direct get and a reply claim "
                 "work; in domain edge-a, the leaf's own JetStream, the site's intake, worker and scheduler serve "
                 "requests (store, direct get, claim, take and acknowledge), which the hub's work queue does not "
                 "capture; acknowledgements and direct gets in one domain leave the other's stream and consumer "
                 "alone (same sequence numbers in both); edge-a serves again with the hub stopped; request-reply "
                 "to the hub works; anonymous connections and job subjects published by a client or a worker are "
                 "refused")
    finally:
        for pr in procs:
            if pr.poll() is None:
                pr.send_signal(signal.SIGTERM)
        for pr in procs:
            try:
                pr.wait(5)
            except subprocess.TimeoutExpired:
                pr.kill()
        subprocess.run(["rm", "-rf", str(tmp)])


# ------------------------------------------------------------------------------ main


def check_dockerfile(ws: Workspace, r: Report) -> None:
    print("docker/Dockerfile", flush=True)
    if not ws.dockerfile.exists():
        r.error("docker/Dockerfile is missing")
        return
    copied = dockerfile_copied_binaries(ws.dockerfile)
    for b in sorted(copied):
        if b not in ws.bins:
            r.error(f"docker/Dockerfile copies binary {b!r}, which the workspace does not build "
                    f"({', '.join(sorted(ws.bins))})")
    for b in sorted(set(ws.bins) - copied):
        r.error(f"docker/Dockerfile does not ship workspace binary {b!r}")
    for name, t in ws.targets.items():
        if t.entrypoint and t.entrypoint not in ws.bins:
            r.error(f"docker/Dockerfile target {name}: entrypoint {t.entrypoint!r} is no workspace binary")
        if t.entrypoint:
            b = ws.bins.get(t.entrypoint)
            for k in t.env:
                if b:
                    ws.check_env(f"docker/Dockerfile target {name}", b, k)
    text = ws.dockerfile.read_text()
    for needle, why in [("USER 10001", "a non-root runtime user"), ("TARGETARCH", "the target architecture"),
                        ("scripts/setup", "the asset fetch"), ("cargo build --release --locked", "the release build"),
                        ("HEALTHCHECK", "health checks")]:
        if needle not in text:
            r.error(f"docker/Dockerfile: no {needle!r} ({why})")
    r.ok(f"Dockerfile targets {', '.join(n for n, t in ws.targets.items() if t.entrypoint)}; "
         f"binaries {', '.join(sorted(copied))}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, required=True, help="the workspace (Cargo.toml, Rust sources)")
    ap.add_argument("--deploy", type=Path, help="where docker/, compose/ and k8s/ are (default: --src)")
    ap.add_argument("--compose", required=True, help="docker-compose executable")
    ap.add_argument("--kustomize", required=True, help="kustomize command, e.g. 'kubectl kustomize'")
    ap.add_argument("--kubernetes-validate", required=True)
    ap.add_argument("--k8s-version", action="append", default=[])
    ap.add_argument("--nats-server", help="nats-server executable (optional: NATS config checks)")
    a = ap.parse_args()
    deploy = a.deploy or a.src
    r = Report()
    ws = Workspace(a.src.resolve(), deploy.resolve(), r)
    check_dockerfile(ws, r)
    check_compose(ws, a.compose, r)
    check_k8s(ws, a.kustomize.split(), a.kubernetes_validate, a.k8s_version or ["1.30.0", "1.34.0"], r)
    check_nats(ws, a.nats_server, r)
    print()
    if r.errors:
        print(f"validate-deploy: {len(r.errors)} failed, {len(r.warnings)} warnings", flush=True)
        return 1
    print(f"validate-deploy: all checks passed ({len(r.warnings)} warnings)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
