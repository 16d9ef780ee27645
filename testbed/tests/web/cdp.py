#!/usr/bin/env python3
"""A small Chrome DevTools Protocol client for the web view's test (testbed/tests/web.rs).

It drives the machine's own Chromium (Debian's `chromium`, started with
--remote-debugging-port) and needs only `websocket-client` (scripts/setup.sh installs it):

    cdp.py PORT new URL            opens a tab, prints its target id
    cdp.py PORT eval ID EXPR       evaluates EXPR in the tab, prints the value as JSON
    cdp.py PORT shot ID FILE W H   writes a PNG of the tab at W x H pixels
    cdp.py PORT close ID           closes the tab
"""

import base64
import json
import sys
import urllib.request

import websocket


def http(port, method, path):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read().decode()


class Tab:
    def __init__(self, port, target):
        self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{port}/devtools/page/{target}", timeout=30, suppress_origin=True
        )
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise SystemExit(f"{method}: {msg['error']}")
                return msg["result"]


def main(argv):
    port, command = argv[1], argv[2]
    if command == "new":
        target = json.loads(http(port, "PUT", "/json/new?" + argv[3]))
        print(target["id"])
    elif command == "eval":
        tab = Tab(port, argv[3])
        result = tab.call(
            "Runtime.evaluate", expression=argv[4], returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise SystemExit(f"exception: {result['exceptionDetails']}")
        print(json.dumps(result["result"].get("value")))
    elif command == "shot":
        tab = Tab(port, argv[3])
        width, height = int(argv[5]), int(argv[6])
        tab.call(
            "Emulation.setDeviceMetricsOverride",
            width=width, height=height, deviceScaleFactor=1, mobile=False,
        )
        shot = tab.call("Page.captureScreenshot", format="png")
        with open(argv[4], "wb") as f:
            f.write(base64.b64decode(shot["data"]))
    elif command == "close":
        http(port, "GET", f"/json/close/{argv[3]}")
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main(sys.argv)
