#!/usr/bin/env python3
"""Photograph a web page with headless Chromium once it shows the given texts.

    ui.py URL OUT.png [TEXT...]     writes OUT.png and OUT.html (the rendered page)

The Consul UI never goes idle (it keeps blocking queries open), so Chromium's own
--screenshot shoots while it still shows a spinner and --virtual-time-budget waits for the
queries to time out, minutes later. This drives Chromium over the DevTools protocol on
--remote-debugging-pipe (NUL-separated JSON on fds 3 and 4: the standard library is
enough) and shoots when every TEXT is on the page. Exits 1, after saving what it saw, if
they do not all appear within 30 s.
"""
import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

WAIT = 30.0


class Chromium:
    def __init__(self, profile):
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()

        def fds():  # the child reads commands on fd 3 and answers on fd 4
            # Through copies: a pipe may already be fd 3 or 4, and dup2 onto itself
            # would keep its close-on-exec flag.
            r, w = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.proc = subprocess.Popen(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={profile}", "--window-size=1280,800", "--remote-debugging-pipe",
             "about:blank"],
            preexec_fn=fds, close_fds=False, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.buf = b""
        self.next_id = 0
        self.session = None

    def call(self, method, **params):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if self.session:
            msg["sessionId"] = self.session
        os.write(self.to_chrome, json.dumps(msg).encode() + b"\0")
        while True:  # skip events until our answer
            while b"\0" not in self.buf:
                chunk = os.read(self.from_chrome, 1 << 16)
                if not chunk:
                    raise SystemExit("ui.py: chromium exited")
                self.buf += chunk
            raw, self.buf = self.buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise SystemExit(f"ui.py: {method}: {reply['error']}")
                return reply["result"]

    def text(self, expression):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value") or ""


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    url, out, texts = sys.argv[1], sys.argv[2], sys.argv[3:]
    with tempfile.TemporaryDirectory(prefix="pilot-ui-", ignore_cleanup_errors=True) as profile:
        c = Chromium(profile)
        try:
            target = c.call("Target.createTarget", url="about:blank")["targetId"]
            c.session = c.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            c.call("Emulation.setDeviceMetricsOverride", width=1280, height=800, deviceScaleFactor=1, mobile=False)
            c.call("Page.navigate", url=url)
            end = time.monotonic() + WAIT
            missing = texts
            while time.monotonic() < end:
                body = c.text("document.body ? document.body.innerText : ''")
                missing = [t for t in texts if t not in body]
                if not missing:
                    break
                time.sleep(0.5)
            time.sleep(1.0)  # let the last rows and icons paint
            with open(out, "wb") as f:
                f.write(base64.b64decode(c.call("Page.captureScreenshot", format="png")["data"]))
            with open(os.path.splitext(out)[0] + ".html", "w") as f:
                f.write(c.text("document.documentElement.outerHTML"))
        finally:
            # The whole group: renderers would otherwise still write to the profile.
            os.killpg(c.proc.pid, signal.SIGKILL)
            c.proc.wait()
    if missing:
        raise SystemExit(f"ui.py: {url} did not show {missing} within {WAIT:.0f} s (see {out})")


if __name__ == "__main__":
    main()
