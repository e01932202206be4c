"""Redraw the web client's screenshots for the README.

    python -m tests.browser.screenshot docs/web-client.png docs/web-client-phone.png

Starts a server, lets a few terminal clients talk, joins from Chromium and shoots.
"""

from __future__ import annotations

import sys
import tempfile

from playwright.sync_api import expect, sync_playwright

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, ServerProcess, TcpClient, join

SCRIPT = [
    ("Tess", "morning all! the deploy went fine"),
    ("Ravi", "nice. did the WebSocket listener come up on :8099 too?"),
    ("Tess", "yes, and the page is served from the chat port itself"),
    ("Ravi", "Mina, can you try it from your phone?"),
]


def main(wide: str, phone: str) -> None:
    server = ServerProcess("--rate", "0", "--motd", "Be kind. History is kept for 1000 messages.")
    bots = [TcpClient(server.port, name) for name in ("Tess", "Ravi", "Jo")]
    try:
        with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
                viewport={"width": 1100, "height": 620}, device_scale_factor=1,
            )  # fmt: skip
            page = context.new_page()
            join(page, server.url, "Mina")
            lines = page.locator(".buffer:not([hidden]) .line.msg")
            for count, (name, text) in enumerate(SCRIPT, 1):
                next(b for b in bots if b.name == name).send(text)
                expect(lines).to_have_count(count)  # in order: each shown before the next
            bots[2].send("@Mina: lunch at 1?")
            expect(page.locator("#queries")).to_contain_text("Jo")
            expect(page.locator(".buffer:not([hidden]) .line.msg")).to_have_count(len(SCRIPT))
            page.locator("#input").fill("on it, looks great on ")
            page.screenshot(path=wide)
            page.set_viewport_size({"width": 360, "height": 640})
            page.screenshot(path=phone)
            context.close()
    finally:
        for bot in bots:
            bot.close()
        server.stop()


if __name__ == "__main__":
    main(*sys.argv[1:3])
