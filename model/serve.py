"""Serve a trained checkpoint over an OpenAI-compatible completions API (loopback by default).

    python model/serve.py --ckpt <lake>/runs/tiny [--host 127.0.0.1] [--port 8000] [--name lmrefinery]

POST /v1/completions {"prompt": str, "max_tokens": int, "temperature": float, "top_k": int, "n": int,
"seed": int} -> {"object": "text_completion", "model", "choices": [{"index", "text", "finish_reason"}]};
GET /v1/models lists the one model. Sampling is model/sample.py's: the same seed gives the same text, so a
client (jobs/synthesize.py --generator http://host:port/v1) gets what the checkpoint generator would.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from udfs.common import run_main  # noqa: E402


def make_server(ckpt: str, host: str = "127.0.0.1", port: int = 8000, name: str = "lmrefinery",
                data_dir: str | None = None) -> ThreadingHTTPServer:
    from model.sample import generate_text, load_model, load_tokenizer

    model, ck = load_model(ckpt)
    enc = load_tokenizer(ck, data_dir=data_dir)
    lock = threading.Lock()  # one generation at a time: the model is not shared across threads safely

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):  # quiet: a request per line would drown the caller's log
            return

        def _send(self, code: int, obj: dict) -> None:
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path.rstrip("/") == "/v1/models":
                return self._send(200, {"object": "list", "data": [{"id": name, "object": "model"}]})
            return self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):
            if self.path.rstrip("/") != "/v1/completions":
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            try:
                req = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                prompt = req.get("prompt", "")
                if isinstance(prompt, list):
                    if len(prompt) != 1:
                        raise ValueError("one prompt per request")
                    prompt = prompt[0]
                n, max_tokens = int(req.get("n", 1)), int(req.get("max_tokens", 16))
                temperature, top_k = float(req.get("temperature", 1.0)), int(req.get("top_k", 0) or 0)
                seed = int(req.get("seed", 0))
            except (ValueError, TypeError) as e:
                return self._send(400, {"error": {"message": f"bad request: {e}"}})
            with lock:
                texts = generate_text(model, enc, prompt, max_tokens, temperature, top_k or None, n, seed)
            choices = [{"index": i, "text": t[len(prompt):], "finish_reason": "stop"} for i, t in enumerate(texts)]
            return self._send(200, {"id": f"cmpl-{int(time.time() * 1000)}", "object": "text_completion",
                                    "model": name, "choices": choices})

    return ThreadingHTTPServer((host, port), Handler)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="serve", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="checkpoint file or model/train.py out_dir")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--name", default="lmrefinery", help="model name the API reports")
    p.add_argument("--data", default=None, help="packed folder whose manifest names the tokenizer")
    a = p.parse_args(argv)
    srv = make_server(a.ckpt, a.host, a.port, a.name, a.data)
    print(f"serving {a.ckpt} at http://{a.host}:{srv.server_address[1]}/v1", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(run_main("serve", main))
