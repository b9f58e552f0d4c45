#!/usr/bin/env python3
"""Local stand-ins for the delivery worker's providers, for tests/delivery.sh and the
benchmark: an SMTP server (aiosmtpd) and one HTTP server with the WhatsApp Cloud API, Twilio,
FCM HTTP v1 (and its OAuth token endpoint) and a webhook receiver.

Each HTTP route checks the request against the provider's documented shape (auth header,
body fields and types) and answers 400 {"error": "shape: ..."} when it does not match; every
request is appended to <dir>/requests.jsonl, every email saved as <dir>/mail/<n>.eml.

Failures on demand, by recipient (the first request for it fails, later ones succeed unless
said otherwise):
  address/user containing "e500" -> 500; "e429" -> 429 with Retry-After: 1; "e401" -> 401
  (refused credentials); "e301" -> a 301 redirect to the same URL (a client that follows it
  as a GET gets 501); "slow" -> no answer for 3 s (a client timeout); "bad" -> a
  permanent refusal, every time (WhatsApp 131026, Twilio 21211, FCM UNREGISTERED, webhook
  400, SMTP 550 5.1.1 "no such user");
  SMTP "greylist" -> 451 once.

usage: standins.py --dir DIR --http-port N --smtp-port N [--secret S] [--token T]
                   [--twilio-sid SID --twilio-token TOK] [--public-key PEM] [--delay-ms N]
"""
import argparse, base64, hashlib, hmac, json, os, subprocess, sys, tempfile, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

args = None
lock = threading.Lock()
seen = {}          # recipient -> requests so far (for fail-once behaviour)
tokens = set()     # OAuth access tokens issued
log_file = None
mail_count = 0


def record(entry):
    with lock:
        log_file.write(json.dumps(entry) + "\n")
        log_file.flush()


def first_time(key):
    with lock:
        n = seen.get(key, 0)
        seen[key] = n + 1
        return n == 0


def fault(recipient):
    """The failure a recipient asks for on this request, or None."""
    if "bad" in recipient:
        return "bad"
    for f in ("e500", "e429", "e401", "e301", "slow"):
        if f in recipient and first_time(f + ":" + recipient):
            return f
    return None


class ShapeError(Exception):
    pass


def need(cond, what):
    if not cond:
        raise ShapeError(what)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def generic_fault(self, f, bad_body, bad_status=400):
        if f == "e500":
            self.reply(500, {"error": "internal"})
        elif f == "e429":
            self.reply(429, {"error": "slow down"}, [("Retry-After", "1")])
        elif f == "e401":
            self.reply(401, {"error": "invalid credentials"})
        elif f == "e301":
            self.reply(301, {"error": "moved"}, [("Location", self.path)])
        elif f == "slow":
            time.sleep(3)
            self.reply(500, {"error": "too late"})
        elif f == "bad":
            self.reply(bad_status, bad_body)
        return f is not None

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        path = urlparse(self.path).path
        if args.delay_ms:
            time.sleep(args.delay_ms / 1000)
        try:
            if path.startswith("/whatsapp/"):
                return self.whatsapp(path, raw)
            if path.startswith("/twilio/"):
                return self.twilio(path, raw)
            if path == "/oauth/token":
                return self.oauth(raw)
            if path.startswith("/fcm/"):
                return self.fcm(path, raw)
            if path == "/webhook":
                return self.webhook(raw)
            self.reply(404, {"error": "no such route"})
        except ShapeError as e:
            record({"provider": path.split("/")[1], "shape_error": str(e)})
            self.reply(400, {"error": "shape: " + str(e)})

    def whatsapp(self, path, raw):
        parts = path.split("/")  # /whatsapp/v21.0/<phone_number_id>/messages
        need(len(parts) == 5 and parts[4] == "messages", "path /{version}/{phone_number_id}/messages")
        need(self.headers.get("Authorization") == "Bearer " + args.token, "Authorization: Bearer <token>")
        need(self.headers.get("Content-Type", "").startswith("application/json"), "JSON body")
        b = json.loads(raw)
        need(b.get("messaging_product") == "whatsapp", "messaging_product")
        need(b.get("recipient_type") == "individual", "recipient_type")
        need(isinstance(b.get("to"), str) and b["to"].startswith("+"), "to: a phone number")
        need(b.get("type") == "template", "type: template")
        t = b.get("template", {})
        need(isinstance(t.get("name"), str) and t["name"], "template.name")
        need(isinstance(t.get("language", {}).get("code"), str), "template.language.code")
        for c in t.get("components", []):
            need(c.get("type") == "body", "component type")
            for p in c.get("parameters", []):
                need(p.get("type") == "text" and isinstance(p.get("text"), str) and p["text"], "text parameters")
        f = fault(b["to"])
        if self.generic_fault(f, {"error": {"message": "(#131026) Message undeliverable", "type": "OAuthException", "code": 131026}}):
            record({"provider": "whatsapp", "to": b["to"], "status": "fault " + f})
            return
        record({"provider": "whatsapp", "to": b["to"], "key": b.get("biz_opaque_callback_data"), "template": t, "status": "ok"})
        self.reply(200, {"messaging_product": "whatsapp", "contacts": [{"input": b["to"], "wa_id": b["to"][1:]}],
                         "messages": [{"id": "wamid.%d" % time.time_ns()}]})

    def twilio(self, path, raw):
        parts = path.split("/")  # /twilio/2010-04-01/Accounts/<sid>/Messages.json
        need(len(parts) == 6 and parts[2] == "2010-04-01" and parts[3] == "Accounts" and parts[5] == "Messages.json",
             "path /2010-04-01/Accounts/{sid}/Messages.json")
        expected = "Basic " + base64.b64encode(("%s:%s" % (args.twilio_sid, args.twilio_token)).encode()).decode()
        need(parts[4] == args.twilio_sid and self.headers.get("Authorization") == expected, "basic auth sid:token")
        need(self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"), "form body")
        form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        need(form.get("To", "").startswith("+"), "To")
        need(bool(form.get("From")) != bool(form.get("MessagingServiceSid")), "From or MessagingServiceSid")
        need(bool(form.get("Body")), "Body")
        f = fault(form["To"])
        if self.generic_fault(f, {"code": 21211, "message": "The 'To' number is not a valid phone number.", "status": 400}):
            record({"provider": "sms", "to": form["To"], "status": "fault " + f})
            return
        record({"provider": "sms", "to": form["To"], "body": form["Body"], "status": "ok"})
        self.reply(201, {"sid": "SM%032x" % time.time_ns(), "status": "queued", "to": form["To"]})

    def oauth(self, raw):
        form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        need(form.get("grant_type") == "urn:ietf:params:oauth:grant-type:jwt-bearer", "grant_type")
        jwt = form.get("assertion", "").split(".")
        need(len(jwt) == 3, "assertion: a JWT")
        pad = lambda s: s + "=" * (-len(s) % 4)
        header = json.loads(base64.urlsafe_b64decode(pad(jwt[0])))
        claims = json.loads(base64.urlsafe_b64decode(pad(jwt[1])))
        need(header.get("alg") == "RS256", "alg RS256")
        need(claims.get("scope") == "https://www.googleapis.com/auth/firebase.messaging", "scope")
        need(claims.get("aud", "").endswith("/oauth/token") and "@" in claims.get("iss", ""), "aud and iss")
        need(claims["exp"] - claims["iat"] <= 3600 and abs(claims["iat"] - time.time()) < 300, "iat/exp")
        if args.public_key:
            with tempfile.TemporaryDirectory() as d:
                open(d + "/data", "wb").write((jwt[0] + "." + jwt[1]).encode())
                open(d + "/sig", "wb").write(base64.urlsafe_b64decode(pad(jwt[2])))
                ok = subprocess.run(["openssl", "dgst", "-sha256", "-verify", args.public_key, "-signature",
                                     d + "/sig", d + "/data"], capture_output=True).returncode == 0
            need(ok, "a JWT signed with the service account's key")
        token = "ya29.test-%d" % len(tokens)
        with lock:
            tokens.add(token)
        record({"provider": "oauth", "status": "ok"})
        self.reply(200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    def fcm(self, path, raw):
        need(path.startswith("/fcm/v1/projects/") and path.endswith("/messages:send"), "path /v1/projects/{p}/messages:send")
        auth = self.headers.get("Authorization", "")
        need(auth.startswith("Bearer ") and auth[7:] in tokens, "Authorization: Bearer <token from the OAuth endpoint>")
        m = json.loads(raw).get("message", {})
        need(isinstance(m.get("token"), str) and m["token"], "message.token")
        n = m.get("notification", {})
        need(isinstance(n.get("title"), str) and isinstance(n.get("body"), str), "notification.title/body")
        need(all(isinstance(v, str) for v in m.get("data", {}).values()), "data values are strings")
        f = fault(m["token"])
        if self.generic_fault(f, {"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND",
                                            "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                                                         "errorCode": "UNREGISTERED"}]}}, 404):
            record({"provider": "push", "to": m["token"], "status": "fault " + f})
            return
        record({"provider": "push", "to": m["token"], "key": m.get("data", {}).get("idempotency_key"),
                "title": n["title"], "status": "ok"})
        self.reply(200, {"name": "projects/p/messages/%d" % time.time_ns()})

    def webhook(self, raw):
        ts = self.headers.get("X-Personalize-Timestamp", "")
        sig = self.headers.get("X-Personalize-Signature", "")
        need(ts.isdigit() and abs(int(ts) - time.time()) < 300, "a fresh X-Personalize-Timestamp")
        want = "v1=" + hmac.new(args.secret.encode(), ts.encode() + b"." + raw, hashlib.sha256).hexdigest()
        need(hmac.compare_digest(sig, want), "X-Personalize-Signature: v1=HMAC-SHA-256(secret, timestamp.body)")
        b = json.loads(raw)
        need(self.headers.get("Idempotency-Key") == b.get("idempotency_key"), "Idempotency-Key header = body's key")
        for k in ("message_id", "campaign", "channel", "user_id", "payload"):
            need(k in b, "body." + k)
        f = fault(b["user_id"])
        if self.generic_fault(f, {"error": "unknown user"}):
            record({"provider": "webhook", "user": b["user_id"], "status": "fault " + f})
            return
        record({"provider": "webhook", "user": b["user_id"], "key": b["idempotency_key"], "status": "ok"})
        self.reply(200, {"ok": True})


def smtp_server():
    from aiosmtpd.controller import Controller

    class Sink:
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            if "bad" in address:
                record({"provider": "email", "to": address, "status": "fault bad"})
                return "550 5.1.1 <%s>: no such user" % address
            if "greylist" in address and first_time("greylist:" + address):
                record({"provider": "email", "to": address, "status": "fault greylist"})
                return "451 4.7.1 greylisted, try again later"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):
            global mail_count
            with lock:
                mail_count += 1
                n = mail_count
            with open(os.path.join(args.dir, "mail", "%06d.eml" % n), "wb") as f:
                f.write(envelope.original_content)
            record({"provider": "email", "to": envelope.rcpt_tos, "file": "%06d.eml" % n, "status": "ok"})
            return "250 Message accepted"

    c = Controller(Sink(), hostname="127.0.0.1", port=args.smtp_port)
    c.start()
    return c


def main():
    global args, log_file
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--smtp-port", type=int, default=0)
    p.add_argument("--secret", default="webhook-secret")
    p.add_argument("--token", default="whatsapp-token")
    p.add_argument("--twilio-sid", default="AC00000000000000000000000000000000")
    p.add_argument("--twilio-token", default="twilio-token")
    p.add_argument("--public-key")
    p.add_argument("--delay-ms", type=int, default=0)
    args = p.parse_args()
    os.makedirs(os.path.join(args.dir, "mail"), exist_ok=True)
    log_file = open(os.path.join(args.dir, "requests.jsonl"), "a")
    if args.smtp_port:
        smtp_server()
    server = ThreadingHTTPServer(("127.0.0.1", args.http_port), Handler)
    server.daemon_threads = True
    print("standins ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
