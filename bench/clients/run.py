"""The client matrix of issue #16: third-party OpenAI clients against `tiergate serve` on the fakes.

    bash bench/clients/run.sh          # or: python3 bench/clients/run.py [--no-install]

1. makes bench/clients/.venv and pip-installs the clients (openai, langchain-openai, pydantic-ai,
   instructor, litellm), and `npm install openai` into bench/clients/node_modules; a client whose
   package does not install is skipped, not failed;
2. starts `tiergate fake-upstream` and `tiergate serve --config examples/rules.fake.yaml` on free
   loopback ports (the tiergate of the repository's .venv, or $TIERGATE);
3. runs each client's program (bench/clients/*_py.py, openai_node.mjs, and curl here), one JSON line
   per capability;
4. prints the matrix, client x capability: ok / FAIL (its one-line error below) / skipped / n/a
   (the client has no such API), and exits 1 if any cell failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VENV = HERE / ".venv"
PY = VENV / "bin" / "python"
CAPS = [
    "chat",
    "chat-stream",
    "chat-tools",
    "chat-structured",
    "resp",
    "resp-stream",
    "resp-tools",
    "resp-structured",
    "embeddings",
    "resp-anthropic",
]
# client -> (pip packages or "npm:NAME" or "bin:NAME", the program, the distributions whose versions are shown)
CLIENTS: dict[str, tuple[list[str], str, list[str]]] = {
    "openai-python": (["openai"], "openai_py.py", ["openai"]),
    "langchain-openai": (["langchain-openai"], "langchain_py.py", ["langchain-openai", "langchain-core"]),
    "pydantic-ai": (["pydantic-ai"], "pydantic_ai_py.py", ["pydantic-ai"]),
    "instructor": (["instructor"], "instructor_py.py", ["instructor"]),
    "litellm": (["litellm"], "litellm_py.py", ["litellm"]),
    "openai-node": (["npm:openai"], "openai_node.mjs", ["npm:openai"]),
    "curl": (["bin:curl"], "", ["bin:curl"]),
}
CELL_TIMEOUT_S = 300  # one client's whole program; the fakes answer at once


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def install() -> dict[str, str]:
    """Install what each client needs; the clients that could not be installed, with why."""
    skipped: dict[str, str] = {}
    if not PY.exists():
        say(f"creating {VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    # The Python clients in one pip run, so that one resolver sees all their pins (one at a time, a later
    # install may move a shared dependency such as openai under an earlier one); one by one only if that fails.
    pip = [str(PY), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    wanted = [p for packages, _, _ in CLIENTS.values() for p in packages if ":" not in p]
    say("installing: " + " ".join(wanted))
    together = subprocess.run(pip + wanted, capture_output=True, text=True).returncode == 0
    for client, (packages, _, _) in CLIENTS.items():
        for package in packages:
            if together and ":" not in package:
                continue
            if package.startswith("bin:"):
                if shutil.which(package[4:]) is None:
                    skipped[client] = f"{package[4:]} not on PATH"
                continue
            if package.startswith("npm:"):
                if shutil.which("npm") is None or shutil.which("node") is None:
                    skipped[client] = "node/npm not on PATH"
                    continue
                command = ["npm", "install", "--prefix", str(HERE), "--no-save", "--no-package-lock"]
                command += ["--no-audit", "--no-fund", package[4:]]
            else:
                command = pip + [package]
            say("installing: " + " ".join(command[-1:]))
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
                skipped[client] = f"{package} did not install: {last}"
                say(f"{client}: SKIPPED, {skipped[client]}")
    return skipped


def versions() -> dict[str, str]:
    found: dict[str, str] = {}
    script = "import importlib.metadata as m, json, sys; print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))"
    names = [d for _, _, ds in CLIENTS.values() for d in ds if ":" not in d] + ["pydantic"]
    for name in names:
        done = subprocess.run([str(PY), "-c", script, name], capture_output=True, text=True)
        found[name] = json.loads(done.stdout)[name] if done.returncode == 0 else "not installed"
    package = HERE / "node_modules" / "openai" / "package.json"
    found["openai (npm)"] = json.loads(package.read_text())["version"] if package.exists() else "not installed"
    found["node"] = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    curl = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout.split()
    found["curl"] = curl[1] if len(curl) > 1 else "not installed"
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, process: subprocess.Popen[bytes], deadline_s: float = 60) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if process.poll() is not None:
            raise SystemExit(f"{process.args} exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"nothing answered {url} in {deadline_s} s")


def start(workdir: Path) -> tuple[str, list[subprocess.Popen[bytes]]]:
    tiergate = os.environ.get("TIERGATE", str(ROOT / ".venv" / "bin" / "tiergate"))
    fake_port, port = free_port(), free_port()
    logs = [open(workdir / name, "wb") for name in ("fake-upstream.log", "serve.log")]  # noqa: SIM115
    fakes = subprocess.Popen([tiergate, "fake-upstream", "--port", str(fake_port)], stdout=logs[0], stderr=logs[0])
    fake_url = f"http://127.0.0.1:{fake_port}"
    wait_up(fake_url + "/", fakes)
    serve = [tiergate, "serve", "--config", str(ROOT / "examples" / "rules.fake.yaml"), "--port", str(port)]
    serve += ["--db", str(workdir / "tiergate.db")]
    env = {**os.environ, "FAKE_UPSTREAM_URL": fake_url}
    proxy = subprocess.Popen(serve, stdout=logs[1], stderr=logs[1], env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    wait_up(url + "/v1/models", proxy)
    say(f"fakes on {fake_url}, tiergate on {url} (logs in {workdir})")
    return url, [proxy, fakes]


def curl_cells(url: str) -> list[dict[str, str]]:
    """curl: chat and Responses, whole and streamed."""

    def post(path: str, task: str, body: dict[str, object]) -> str:
        command = ["curl", "-sS", "--fail-with-body", "-m", "60", f"{url}/v1/{path}"]
        command += ["-H", "Content-Type: application/json", "-H", f"X-Task-Type: {task}", "-d", json.dumps(body)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"curl exit {done.returncode}: {(done.stderr + done.stdout).strip()[:200]}")
        return done.stdout

    def events(text: str) -> list[dict[str, object]]:
        data = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
        return [json.loads(d) for d in data if d != "[DONE]"]

    ask = "Summarize: cron jobs move to a queue"

    def chat() -> None:
        reply = json.loads(
            post("chat/completions", "summary", {"model": "auto", "messages": [{"role": "user", "content": ask}]})
        )
        assert reply["choices"][0]["message"]["content"].startswith("Fake reply from gpt-5.4-mini"), reply

    def chat_stream() -> None:
        body = {"model": "auto", "messages": [{"role": "user", "content": ask}], "stream": True}
        raw = post("chat/completions", "summary", body)
        chunks = events(raw)
        text = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c["choices"])  # type: ignore[index,union-attr]
        assert raw.rstrip().endswith("data: [DONE]") and text.startswith("Fake reply from gpt-5.4-mini"), text

    def responses() -> None:
        reply = json.loads(post("responses", "summary", {"model": "auto", "input": ask}))
        text = reply["output"][0]["content"][0]["text"]
        assert reply["status"] == "completed" and text.startswith("Fake reply from gpt-5.4-mini"), reply

    def responses_stream() -> None:
        found = events(post("responses", "summary", {"model": "auto", "input": ask, "stream": True}))
        text = "".join(str(e["delta"]) for e in found if e["type"] == "response.output_text.delta")
        assert found[-1]["type"] == "response.completed" and text.startswith("Fake reply from gpt-5.4-mini"), text

    def responses_anthropic() -> None:
        reply = json.loads(post("responses", "agent", {"model": "claude-opus-5-5", "input": ask}))
        text = reply["output"][0]["content"][0]["text"]
        assert text.startswith("Fake Claude reply from claude-opus-5-5"), reply

    cells = []
    for cap, body in [
        ("chat", chat),
        ("chat-stream", chat_stream),
        ("resp", responses),
        ("resp-stream", responses_stream),
        ("resp-anthropic", responses_anthropic),
    ]:
        try:
            body()
            cells.append({"client": "curl", "cap": cap, "status": "ok", "error": ""})
        except Exception as exc:  # noqa: BLE001 - a cell's FAIL
            error = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
            cells.append({"client": "curl", "cap": cap, "status": "FAIL", "error": error})
    return cells


def run_client(client: str, program: str, url: str) -> list[dict[str, str]]:
    command = ["node", program] if program.endswith(".mjs") else [str(PY), program]
    env = {**os.environ, "TIERGATE_URL": url, "NODE_PATH": str(HERE / "node_modules")}
    try:
        done = subprocess.run(command, cwd=HERE, env=env, capture_output=True, text=True, timeout=CELL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return [{"client": client, "cap": "*", "status": "FAIL", "error": f"timed out after {CELL_TIMEOUT_S} s"}]
    cells = []
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            cells.append(json.loads(line))
        else:
            say(f"{client}: {line}")
    if done.returncode != 0 or not cells:
        last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        cells.append({"client": client, "cap": "*", "status": "FAIL", "error": f"exit {done.returncode}: {last}"})
    return cells


def served(log: str) -> list[str]:
    """What tiergate's access log says it served: calls per path, status, task and target."""
    counts: dict[tuple[str, ...], int] = {}
    for line in log.splitlines():
        if "tiergate.access:" not in line:
            continue
        words = line.split("tiergate.access:", 1)[1].split()
        fields = dict(w.split("=", 1) for w in words if "=" in w)
        key = (words[1], words[2], fields.get("task", "-"), fields.get("model", "-"))
        counts[key] = counts.get(key, 0) + 1
    return [
        f"  {n:3d} x {path} {status} task={task} model={model}" for (path, status, task, model), n in counts.items()
    ]


def matrix(
    chosen: list[str], results: dict[str, dict[str, dict[str, str]]], skipped: dict[str, str]
) -> tuple[str, int]:
    width = max(len(c) for c in CLIENTS) + 2
    lines = ["client".ljust(width) + " ".join(cap.ljust(max(len(cap), 7)) for cap in CAPS)]
    errors: list[str] = []
    for client in chosen:
        row = results.get(client, {})
        marks = []
        for cap in CAPS:
            if client in skipped:
                mark = "skipped"
            elif cap in row:
                mark = row[cap]["status"]
                if mark == "FAIL":
                    errors.append(f"{client} {cap}: {row[cap]['error']}")
            else:
                mark = "n/a"
            marks.append(mark.ljust(max(len(cap), 7)))
        lines.append(client.ljust(width) + " ".join(marks).rstrip())
        if "*" in row:
            errors.append(f"{client}: {row['*']['error']}")
    lines += [f"{c}: skipped, {why}" for c, why in skipped.items()]
    lines += ["", "FAIL:" if errors else "no FAIL"] + [f"  {e}" for e in errors]
    return "\n".join(lines), len(errors)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--no-install", action="store_true", help="use bench/clients/.venv and node_modules as they are"
    )
    parser.add_argument("--only", nargs="*", help="these clients only")
    args = parser.parse_args()
    skipped = {} if args.no_install else install()
    for client, (packages, _program, _) in CLIENTS.items():
        if client not in skipped and packages[0].startswith("npm:") and not (HERE / "node_modules" / "openai").exists():
            skipped[client] = "node_modules/openai missing"
    chosen = [c for c in CLIENTS if not args.only or c in args.only]
    results: dict[str, dict[str, dict[str, str]]] = {}
    with tempfile.TemporaryDirectory(prefix="tiergate-clients-") as tmp:
        url, processes = start(Path(tmp))
        try:
            for client in chosen:
                if client in skipped:
                    continue
                say(f"running {client}")
                program = CLIENTS[client][1]
                cells = curl_cells(url) if client == "curl" else run_client(client, program, url)
                results[client] = {cell["cap"]: cell for cell in cells}
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
            log = (Path(tmp) / "serve.log").read_text()
            if any(c["status"] == "FAIL" for r in results.values() for c in r.values()):
                say(log[-3000:])
    table, failures = matrix(chosen, results, skipped)
    print(f"tiergate client matrix, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(table)
    print()
    print("tiergate served (its access log):")
    print("\n".join(sorted(served(log), key=lambda line: line.split(" x ", 1)[1])))
    print()
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
