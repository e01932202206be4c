"""The web client in Chromium, against a real server (see conftest.py for the rules)."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.browser.conftest import join


def texts(page) -> list[str]:
    """The text of every chat message shown in the active conversation."""
    return page.locator(".buffer:not([hidden]) .line.msg .body").all_inner_texts()


def test_two_pages_and_a_tcp_client_chat_in_one_room(browser, server, tcp):
    ann, bob = browser.new_page(), browser.new_page()
    join(ann, server.url, "Ann")
    join(bob, server.url, "Bob")
    tess = tcp("Tess")
    expect(ann.locator("#member-list")).to_contain_text("Tess")
    expect(ann.locator("#member-list li")).to_have_count(3)

    ann.fill("#input", "hello from Ann")
    ann.press("#input", "Enter")
    tess.expect("Ann:hello from Ann")
    expect(bob.locator(".line.msg").last).to_contain_text("Ann: hello from Ann")

    tess.send("hello from the terminal")
    for page in (ann, bob):
        expect(page.locator(".line.msg").last).to_contain_text("Tess: hello from the terminal")

    bob.fill("#input", "and Bob")
    bob.press("#input", "Enter")
    expect(ann.locator(".line.msg").last).to_contain_text("Bob: and Bob")
    tess.expect("Bob:and Bob")
    # Timestamps, the day separator, the same colour for the same name on both pages.
    expect(ann.locator(".line.msg time").first).to_have_text(re.compile(r"\d\d:\d\d"))
    expect(ann.locator(".day")).to_have_count(1)
    colour = ann.locator(".line.msg .nick", has_text="Tess").first.get_attribute("class")
    assert colour == bob.locator(".line.msg .nick", has_text="Tess").first.get_attribute("class")


def test_a_dropped_connection_resumes_with_each_missed_message_once(browser, server, tcp, proxy):
    page = browser.new_page()
    join(page, proxy.url, "Ann")
    tess = tcp("Tess")
    for text in ("before 1", "before 2"):
        tess.send(text)
    expect(page.locator(".line.msg").last).to_contain_text("before 2")

    proxy.hold()
    proxy.cut()  # the network drops the page's connection
    tess.expect_prefix("* Ann left dev")
    for text in ("missed 1", "missed 2", "missed 3"):
        tess.send(text)
    tess.expect("Tess:missed 3")
    expect(page.locator("#status")).to_contain_text("reconnecting")
    expect(page.locator("#input")).to_be_disabled()

    proxy.release()
    expect(page.locator("#input")).to_be_enabled()
    tess.expect("* Ann joined dev")
    tess.send("after")
    expect(page.locator(".line.msg").last).to_contain_text("after")
    said = [t.split(": ", 1)[1] for t in texts(page)]
    assert said == ["before 1", "before 2", "missed 1", "missed 2", "missed 3", "after"]


def test_a_mention_is_highlighted(browser, server, tcp):
    page = browser.new_page()
    join(page, server.url, "Ann")
    tess = tcp("Tess")
    tess.send("hey ann, look at this")
    tess.send("annabel is someone else")
    tess.send("no one")
    expect(page.locator(".line.msg")).to_have_count(3)
    lines = page.locator(".line.msg")
    expect(lines.nth(0)).to_have_class(re.compile(r"\bmention\b"))
    expect(lines.nth(1)).not_to_have_class(re.compile(r"\bmention\b"))
    expect(lines.nth(2)).not_to_have_class(re.compile(r"\bmention\b"))


def test_nothing_anyone_types_becomes_html(browser, server, tcp):
    page = browser.new_page()
    join(page, server.url, "Ann")
    tess = tcp("Tess")
    hostile = [
        '<img src=x onerror="window.__pwned = 1">',
        "<script>window.__pwned = 2</script>",
        "<b>bold</b> &amp; <a href='javascript:window.__pwned=3'>link</a>",
        "javascript:window.__pwned=4 http://example.org/<i>x</i>",
    ]
    for text in hostile:
        tess.send(text)
    page.fill("#input", '<iframe src="javascript:window.__pwned=5"></iframe>')
    page.press("#input", "Enter")
    expect(page.locator(".line.msg")).to_have_count(5)
    assert [t.split(": ", 1)[1] for t in texts(page)] == [
        *hostile,
        '<iframe src="javascript:window.__pwned=5"></iframe>',
    ]
    log = page.locator("#log")
    for tag in ("img", "script", "b", "i", "iframe"):
        assert log.locator(tag).count() == 0, tag
    links = log.locator("a")
    assert links.count() == 1
    assert links.first.get_attribute("href") == "http://example.org/"  # the URL ends at "<"
    assert page.evaluate("window.__pwned") is None


def test_usable_at_360_px(browser, server, tcp):
    page = browser.new_page()
    page.set_viewport_size({"width": 360, "height": 640})
    join(page, server.url, "Ann")
    tcp("Tess").send("a-very-long-word-" * 20)
    expect(page.locator(".line.msg")).to_have_count(1)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, width
    for selector in ("#input", "#send", "#toggle-members", "#log"):
        box = page.locator(selector).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 360, selector
        assert box["y"] + box["height"] <= 640, selector
    expect(page.locator("#members")).to_be_hidden()
    page.click("#toggle-members")
    expect(page.locator("#members")).to_be_visible()
    expect(page.locator("#member-list")).to_contain_text("Tess")
    page.keyboard.press("Escape")
    expect(page.locator("#members")).to_be_hidden()
    page.fill("#input", "typed on a phone")
    page.click("#send")
    expect(page.locator(".line.msg").last).to_contain_text("typed on a phone")


def test_private_conversation_and_unread_counts(browser, server, tcp):
    page = browser.new_page()
    join(page, server.url, "Ann")
    tess = tcp("Tess")
    expect(page.locator("#member-list")).to_contain_text("Tess")
    page.locator("#member-list button", has_text="Tess").click()
    expect(page.locator("#buffer-name")).to_have_text("Tess")
    page.fill("#input", "psst")
    page.press("#input", "Enter")
    tess.expect("[private] Ann:psst")
    expect(page.locator(".line.msg").last).to_contain_text("Ann: psst")
    tess.send("@Ann: hi back")
    expect(page.locator(".line.msg").last).to_contain_text("Tess: hi back")
    # The room is not on screen: what is said there is counted as unread.
    tess.send("in the room")
    tess.send("again")
    expect(page).to_have_title(re.compile(r"^\(2\) "))
    room = page.locator("#rooms button", has_text="dev")
    expect(room.locator(".unread")).to_have_text("2")
    room.click()
    expect(page.locator(".buffer:not([hidden]) .marker")).to_contain_text("new since")
    expect(page).to_have_title("dev - machat")
    assert texts(page)[-2:] == ["Tess: in the room", "Tess: again"]


def test_input_history_and_tab_completion(browser, server, tcp):
    page = browser.new_page()
    join(page, server.url, "Ann")
    tcp("Tess")
    expect(page.locator("#member-list")).to_contain_text("Tess")
    box = page.locator("#input")
    box.fill("first")
    box.press("Enter")
    box.fill("second")
    box.press("Enter")
    box.press("ArrowUp")
    expect(box).to_have_value("second")
    box.press("ArrowUp")
    expect(box).to_have_value("first")
    box.press("ArrowDown")
    box.press("ArrowDown")
    expect(box).to_have_value("")
    box.type("te")
    box.press("Tab")
    expect(box).to_have_value("Tess: ")
    box.fill("/jo")
    box.press("Tab")
    expect(box).to_have_value("/join ")
    box.fill("/join lab")
    box.press("Enter")
    expect(page.locator("#buffer-name")).to_have_text("lab")
    expect(page.locator("#rooms")).to_contain_text("lab")


NOTIFICATION_RECORDER = """
window.__notified = [];
window.Notification = class {
  static permission = "default";
  static async requestPermission() { window.Notification.permission = "granted"; return "granted"; }
  constructor(title, options) { window.__notified.push([title, options.body]); }
  close() {}
};
"""


def test_desktop_notifications_are_opt_in(browser, server, tcp):
    page = browser.new_page()
    page.add_init_script(NOTIFICATION_RECORDER)
    join(page, server.url, "Ann")
    tess = tcp("Tess")
    page.evaluate("window.dispatchEvent(new Event('blur'))")  # Ann looks elsewhere
    tess.send("ann: before opting in")
    expect(page.locator(".line.mention")).to_have_count(1)
    assert page.evaluate("window.__notified") == []

    page.click("#notify")
    expect(page.locator("#notify")).to_have_attribute("aria-pressed", "true")
    page.evaluate("window.dispatchEvent(new Event('blur'))")
    tess.send("ann: now you hear me")
    tess.send("not about anyone")
    tess.send("@Ann: a private word")
    expect(page.locator(".line.msg")).to_have_count(4)
    assert page.evaluate("window.__notified") == [
        ["Tess in dev", "ann: now you hear me"],
        ["Tess", "a private word"],
    ]
