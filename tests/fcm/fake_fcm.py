"""A local stand-in for FCM HTTP v1 and Google's OAuth2 token endpoint, over HTTPS, for the
`fcm` sink's tests (no FCM is reachable from the test machines).

It implements what the documentation describes:
- POST /token: the JWT bearer grant (RFC 7523). The assertion's RS256 signature is checked
  with the service account's public key, and its `iss`, `aud`, `scope`, `iat` and `exp`
  claims; the answer is {"access_token", "expires_in", "token_type"}.
- POST /v1/projects/<project>/messages:send with `Authorization: Bearer <token>`: the
  message must have exactly one of token/topic/condition and string-valued `data`.

Scripted behaviour, by registration token:
- `bad-*`: 404 NOT_FOUND with errorCode UNREGISTERED;
- `invalid-*`: 400 INVALID_ARGUMENT;
- `quota-*`: the first attempt gets 429 RESOURCE_EXHAUSTED / QUOTA_EXCEEDED with
  `Retry-After: 1`, later ones succeed;
- anything else is delivered.
After `--revoke-after` deliveries the access token in use is revoked (401 UNAUTHENTICATED),
as if it expired early.

Usage: fake_fcm.py PUBLIC_KEY_PEM CERT KEY LOG_JSONL [--revoke-after N]
Prints "listening <port>" once ready. Each delivered message is a line in LOG_JSONL.
"""

import base64
import json
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

public_key = serialization.load_pem_public_key(open(sys.argv[1], "rb").read())
cert, key, log_path = sys.argv[2], sys.argv[3], sys.argv[4]
revoke_after = int(sys.argv[sys.argv.index("--revoke-after") + 1]) if "--revoke-after" in sys.argv else 0

lock = threading.Lock()
state = {"tokens": set(), "issued": 0, "delivered": 0, "quota_seen": set(), "revoked": 0}
log = open(log_path, "a")


def b64url(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def check_assertion(jwt, audience):
    head, claims, sig = jwt.split(".")
    header = json.loads(b64url(head))
    assert header["alg"] == "RS256", header
    public_key.verify(b64url(sig), f"{head}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
    c = json.loads(b64url(claims))
    assert c["aud"] == audience, c
    assert c["scope"] == "https://www.googleapis.com/auth/firebase.messaging", c
    assert c["iss"] == "sluice-test@demo.iam.gserviceaccount.com", c
    now = time.time()
    assert c["iat"] <= now + 5 and c["exp"] > now and c["exp"] - c["iat"] <= 3600, c


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def error(self, status, code, message, error_code=None, headers=()):
        details = []
        if error_code:
            details = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": error_code}]
        self.answer(status, {"error": {"code": status, "message": message, "status": code, "details": details}}, headers)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/token":
            form = parse_qs(body.decode())
            try:
                assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
                check_assertion(form["assertion"][0], f"https://localhost:{self.server.server_port}/token")
            except Exception as e:  # any failed check is an invalid grant
                return self.answer(400, {"error": "invalid_grant", "error_description": repr(e)})
            with lock:
                state["issued"] += 1
                token = f"ya29.test-{state['issued']}-secret"
                state["tokens"].add(token)
            return self.answer(200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"})
        if not self.path.startswith("/v1/projects/demo/messages:send"):
            return self.error(404, "NOT_FOUND", "no such method")
        auth = self.headers.get("Authorization", "")
        with lock:
            if not auth.startswith("Bearer ") or auth[7:] not in state["tokens"]:
                return self.error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        msg = json.loads(body)["message"]
        targets = [k for k in ("token", "topic", "condition") if k in msg]
        if len(targets) != 1 or any(not isinstance(v, str) for v in msg.get("data", {}).values()):
            return self.error(400, "INVALID_ARGUMENT", "bad message", "INVALID_ARGUMENT")
        token = msg.get("token", "")
        if token.startswith("bad-"):
            return self.error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
        if token.startswith("invalid-"):
            return self.error(400, "INVALID_ARGUMENT", "The registration token is not valid.", "INVALID_ARGUMENT")
        with lock:
            if token.startswith("quota-") and token not in state["quota_seen"]:
                state["quota_seen"].add(token)
                log.write(json.dumps({"quota_refused": token, "at": time.time()}) + "\n")
                log.flush()
                return self.error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.", "QUOTA_EXCEEDED", [("Retry-After", "1")])
            state["delivered"] += 1
            log.write(json.dumps({"message": msg, "bearer": auth[7:], "at": time.time()}) + "\n")
            log.flush()
            if revoke_after and state["delivered"] % revoke_after == 0:
                state["tokens"].discard(auth[7:])
                state["revoked"] += 1
        self.answer(200, {"name": f"projects/demo/messages/{state['delivered']}"})


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print("listening", server.server_port, flush=True)
server.serve_forever()
