"""The official `openai` Python client against the gpufleet gateway (real processes).

Starts two `gpufleet mock-backend` processes and `gpufleet up` with them as gateway backends,
then uses openai.OpenAI for a non-streaming and a streaming chat completion, a completion, an
embedding and the model list. Run by scripts/test.sh with the binary path in GPUFLEET_BIN.
"""
import os, socket, subprocess, sys, tempfile, time, secrets, string

import openai

BIN = os.environ["GPUFLEET_BIN"]


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def wait_port(port, limit=30):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close(); return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} not up after {limit}s")


def admin_key():
    # gf_<8 lowercase/digit prefix>_<43 base64url chars>, the format gpufleet keys use.
    alnum = string.ascii_lowercase + string.digits
    b64 = string.ascii_letters + string.digits + "-_"
    return "gf_" + "".join(secrets.choice(alnum) for _ in range(8)) + "_" + "".join(secrets.choice(b64) for _ in range(43))


def main():
    procs = []
    tmp = tempfile.mkdtemp(prefix="gpufleet-openai-")
    try:
        ports = [free_port(), free_port()]
        for p in ports:
            procs.append(subprocess.Popen([BIN, "mock-backend", "--listen", f"127.0.0.1:{p}", "--model", "m1", "--tokens-per-s", "0"], stdout=subprocess.DEVNULL))
            wait_port(p)
        cfg = os.path.join(tmp, "gpufleet.toml")
        with open(cfg, "w") as f:
            f.write("[gateway]\n")
            for i, p in enumerate(ports):
                f.write(f'[[gateway.backends]]\nname = "b{i}"\nkind = "llamacpp"\nurl = "http://127.0.0.1:{p}"\nmodels = ["m1"]\nmax_concurrency = 4\n')
        key = admin_key()
        port = free_port()
        env = dict(os.environ, GPUFLEET_ADMIN_KEY=key, GPUFLEET_LOG_LEVEL="warn")
        procs.append(subprocess.Popen([BIN, "--config", cfg, "up", "--listen", f"127.0.0.1:{port}", "--data-dir", os.path.join(tmp, "data")], env=env, stdout=subprocess.DEVNULL))
        wait_port(port)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=20)

        r = client.chat.completions.create(model="m1", messages=[{"role": "user", "content": "hi"}], max_tokens=8)
        assert r.choices[0].message.content, r
        assert r.usage and r.usage.completion_tokens > 0, r

        chunks = list(client.chat.completions.create(model="m1", messages=[{"role": "user", "content": "hi"}], max_tokens=8, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert len(chunks) > 1 and text, chunks

        c = client.completions.create(model="m1", prompt="hi", max_tokens=4)
        assert c.choices[0].text, c
        e = client.embeddings.create(model="m1", input="hi")
        assert len(e.data[0].embedding) > 0, e
        assert [m.id for m in client.models.list().data] == ["m1"]

        try:
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong", max_retries=0).models.list()
            raise AssertionError("a wrong key must be refused")
        except openai.AuthenticationError:
            pass
        print("openai: 6 passed, 0 failed")
    finally:
        for p in procs:
            p.kill(); p.wait()


if __name__ == "__main__":
    sys.exit(main())
