"""The page at ``GET /`` in a real headless Chromium against a live server on loopback.

A person's path through it: the first rating without an API key is refused and the
page says so; with the key entered, they search and rate three movies, see ten
recommendations each with a reason, rate a fourth (one of the recommendations) and
see the list update without it. The ratings must have reached the server's store.
A screenshot is written as a test artifact (``$METAREC_TEST_ARTIFACTS`` or the
test's tmp folder). Skips when Debian's chromium or Playwright is absent.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

sync_api = pytest.importorskip(
    "playwright.sync_api",
    reason="Playwright for Python is not installed (pip install -e '.[dev]')",
)
expect = sync_api.expect

CHROMIUM = os.environ.get("METAREC_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Debian's chromium, not Playwright's download: no `playwright install`, nothing fetched.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# (what a person types, the title to rate)
# (ids 100, 50, 1: not in id order, so "Your ratings" must keep the order they were given)
RATED = [
    ("fargo", "Fargo (1996)"),
    ("star wars", "Star Wars (1977)"),
    ("toy story", "Toy Story (1995)"),
]


# checked here, not in a fixture: pytest would train and start the session's server first
if not Path(CHROMIUM).exists():
    pytest.skip(
        f"no chromium at {CHROMIUM}: apt-get install chromium, or set METAREC_CHROMIUM",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@dataclass
class Tab:
    page: Any
    problems: list[str] = field(default_factory=list)


@pytest.fixture
def tab(browser: Any) -> Iterator[Tab]:
    """A fresh browser context (empty localStorage: a new anonymous user) that records
    every script error, console error and failed request."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    t = Tab(context.new_page())
    t.page.on("pageerror", lambda e: t.problems.append(f"page error: {e}"))
    t.page.on(
        "console", lambda m: t.problems.append(f"console: {m.text}") if m.type == "error" else None
    )
    t.page.on("requestfailed", lambda r: t.problems.append(f"request failed: {r.url} {r.failure}"))
    yield t
    context.close()


def artifact_dir(tmp_path: Path) -> Path:
    env = os.environ.get("METAREC_TEST_ARTIFACTS")
    out = Path(env) if env else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    return out


def rate_from_search(page: Any, query: str, title: str, stars: int) -> None:
    page.get_by_label("Title").fill(query)
    page.get_by_role("button", name="Search").click()
    row = page.locator("#results li").filter(has_text=title)
    expect(row).to_have_count(1)
    row.get_by_role("button", name=f"{stars} stars").click()


def recommendations(page: Any) -> list[tuple[str, str]]:
    """(item id, reason) of each recommendation shown, in order."""
    rows = page.locator("#recs li")
    return [
        (row.get_attribute("data-item-id"), row.locator(".reason").inner_text())
        for row in rows.all()
    ]


def test_rate_and_get_recommendations_in_a_browser(
    tab: Tab, live_server: str, server_api_key: str, tmp_path: Path
) -> None:
    page = tab.page
    page.goto(live_server + "/")
    expect(page).to_have_title("metarec — try it")
    expect(page.locator("#results li")).to_have_count(20)  # the most popular, before any search

    # without the key the server refuses the write, and the page says so instead of hiding it
    lists = page.locator("main").bounding_box()
    assert lists is not None
    rate_from_search(page, *RATED[0], stars=5)
    alert = page.get_by_role("alert")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("Your ratings are read and saved with this server's API key")
    expect(page.locator("#mine li")).to_have_count(0)
    # over the page, not in it: the banner pushed the lists down, and the next click at
    # the same place rated another film
    after = page.locator("main").bounding_box()
    assert after is not None and after["y"] == lists["y"]
    tab.problems.clear()  # the refused request is logged by the browser as a 401
    # a wrong key is said to be refused, not asked for again as if none were given
    page.get_by_label("API key").fill("not-the-key")
    page.get_by_role("button", name="Save key").click()
    rate_from_search(page, *RATED[0], stars=5)
    expect(alert).to_contain_text("The server refused the saved API key")
    tab.problems.clear()

    page.get_by_label("API key").fill(server_api_key)
    page.get_by_role("button", name="Save key").click()
    expect(alert).to_be_hidden()

    for n, (query, title) in enumerate(RATED, start=1):
        rate_from_search(page, query, title, stars=5)
        expect(page.locator("#mine li")).to_have_count(n)
        expect(page.locator("#recs")).to_have_attribute("data-ratings", str(n))
    expect(page.locator("#recs li")).to_have_count(10)
    before = recommendations(page)
    before_titles = page.locator("#recs li .title").all_inner_texts()
    assert all(reason.strip() for _, reason in before), before
    rated_ids = {li.get_attribute("data-item-id") for li in page.locator("#mine li").all()}
    assert not rated_ids & {item for item, _ in before}  # rated movies are not recommended

    # the fourth rating: the top recommendation itself; the list refreshes without it
    top_id = before[0][0]
    page.locator(f'#recs li[data-item-id="{top_id}"]').get_by_role("button", name="4 stars").click()
    expect(page.locator("#recs")).to_have_attribute("data-ratings", "4")
    expect(page.locator("#mine li")).to_have_count(4)
    expect(page.locator("#recs li")).to_have_count(10)
    after = recommendations(page)
    assert top_id not in {item for item, _ in after}
    assert all(reason.strip() for _, reason in after), after
    expect(page.locator("#recs-status")).to_contain_text("4 ratings")
    top_title = before_titles[0]
    expect(page.locator("#mine li .title")).to_have_text([t for _, t in RATED] + [top_title])
    # keyboard focus survives the redraw: on the same star, now under "Your ratings"
    expect(
        page.locator(f'#mine li[data-item-id="{top_id}"] button[data-rating="4"]')
    ).to_be_focused()
    # the rating shows in the stars' shape, not only their colour: four filled, one outline
    expect(page.locator(f'#mine li[data-item-id="{top_id}"] .stars')).to_have_text("★★★★☆")

    shot = artifact_dir(tmp_path) / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")

    # what the page showed is what the server stored
    user_id = page.locator("#user-id").inner_text()
    key = {"X-API-Key": server_api_key}  # a user's data is read with the key
    stored = httpx.get(f"{live_server}/v1/users/{user_id}", headers=key, timeout=30).json()
    ratings = {h["item_id"]: h["rating"] for h in stored["history"] if h["type"] == "rating"}
    assert ratings[top_id] == 4.0 and len(ratings) == 4
    assert sorted(v for k, v in ratings.items() if k != top_id) == [5.0, 5.0, 5.0]

    # a reload shows the same state, read back from the server (not the browser's copy)
    page.evaluate("localStorage.removeItem('metarec.ratings')")
    page.reload()
    expect(page.locator("#mine li .title")).to_have_text([t for _, t in RATED] + [top_title])
    expect(page.locator("#recs")).to_have_attribute("data-ratings", "4")
    assert [item for item, _ in recommendations(page)] == [item for item, _ in after]
    # a keyboard passes the search results' stars (five Tab stops an item) in one step
    page.locator("body").focus()
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to your recommendations")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    expect(page.locator("#recs li .stars button").first).to_be_focused()
    assert not tab.problems, tab.problems


def test_page_uses_a_key_the_server_hands_it(
    tab: Tab, make_server: Callable[..., Any], server_api_key: str
) -> None:
    """With ``page_api_key`` the server writes its key into the page: nothing to type."""
    live = make_server(page_api_key=True)
    page = tab.page
    page.goto(live.url + "/")
    meta = page.locator('meta[name="metarec-api-key"]')
    expect(meta).to_have_attribute("content", server_api_key)
    page.get_by_text("Settings").click()
    expect(page.get_by_label("API key")).to_be_hidden()  # no key to ask for
    rate_from_search(page, *RATED[1], stars=4)
    expect(page.locator("#recs")).to_have_attribute("data-ratings", "1")
    expect(page.locator("#recs li")).to_have_count(10)
    expect(page.get_by_role("alert")).to_be_hidden()
    assert not tab.problems, tab.problems


def test_a_forgotten_user_comes_back_without_items_gone_and_tabs_share_ratings(
    browser: Any, make_server: Callable[..., Any]
) -> None:
    """A server on a fresh store forgot the user and an item added through the API: the
    page re-sent that rating with the rest at every try, and no rating could be saved
    again; so it did a rating kept from a run on another scale (a 9, of a 1-10 run served
    at this address before). Two tabs each counted their own ratings and wrote them over
    the other's."""
    live = make_server(page_api_key=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        first = context.new_page()
        first.goto(live.url + "/")
        first.evaluate(
            """() => {
                localStorage.setItem("metarec.userId", "web-forgotten");
                localStorage.setItem("metarec.created.web-forgotten", "1");
                localStorage.setItem("metarec.ratings", JSON.stringify([
                    ["added-then-lost", {title: "Gone Since", rating: 5}],
                    ["181", {title: "Return of the Jedi (1983)", rating: 9}],
                    ["50", {title: "Star Wars (1977)", rating: 5}]]));
            }"""
        )
        first.reload()
        # not sent again at load: the server may have erased them (see the test below);
        # the page says so and sends them at the person's word
        expect(first.locator("#forgotten")).to_be_visible()
        expect(first.locator("#recs-status")).to_have_text(
            "The service does not hold your ratings."
        )
        key = {"X-API-Key": live.settings.api_key}
        gone = httpx.get(f"{live.url}/v1/users/web-forgotten", headers=key, timeout=30)
        assert gone.status_code == 404
        other = context.new_page()  # told the same, then sees the list the first sent
        other.goto(live.url + "/")
        expect(other.locator("#forgotten")).to_be_visible()
        first.get_by_role("button", name="Send them again").click()
        expect(other.locator("#forgotten")).to_be_hidden()
        expect(other.locator("#recs")).to_have_attribute("data-ratings", "1")
        other.close()
        expect(first.locator("#mine li .title")).to_have_text(["Star Wars (1977)"])
        expect(first.locator("#recs")).to_have_attribute("data-ratings", "1")
        expect(first.locator("#forgotten")).to_be_hidden()
        expect(first.get_by_role("alert")).to_be_hidden()
        stored = httpx.get(f"{live.url}/v1/users/web-forgotten", headers=key, timeout=30).json()
        assert [h["item_id"] for h in stored["history"]] == ["50"]

        second = context.new_page()
        second.goto(live.url + "/")
        expect(second.locator("#mine li")).to_have_count(1)
        rate_from_search(first, *RATED[0], stars=4)  # Fargo, in the first tab
        expect(second.locator("#mine li .title")).to_have_text(["Star Wars (1977)", "Fargo (1996)"])
        rate_from_search(second, *RATED[2], stars=3)  # Toy Story, in the second
        both = ["Star Wars (1977)", "Fargo (1996)", "Toy Story (1995)"]
        expect(second.locator("#recs")).to_have_attribute("data-ratings", "3")
        expect(first.locator("#mine li .title")).to_have_text(both)
        expect(first.locator("#recs-status")).to_contain_text("3 ratings")
        kept = second.evaluate("JSON.parse(localStorage.getItem('metarec.ratings'))")
        assert [item for item, _ in kept] == ["50", "100", "1"]
    finally:
        context.close()


def test_an_erased_user_stays_erased_and_starting_over_erases(
    browser: Any, make_server: Callable[..., Any]
) -> None:
    """DELETE /v1/users/ID, then the page opened again: it re-created the user with
    every rating it kept, undoing a request to be forgotten. "Start over" left the old
    user's ratings on the server, under an id no one would use again."""
    live = make_server(page_api_key=True)
    key = {"X-API-Key": live.settings.api_key}
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.goto(live.url + "/")
        rate_from_search(page, *RATED[0], stars=5)
        expect(page.locator("#recs")).to_have_attribute("data-ratings", "1")
        user = page.evaluate("localStorage.getItem('metarec.userId')")
        url = f"{live.url}/v1/users/{user}"
        assert httpx.delete(url, headers=key, timeout=30).status_code == 200
        page.reload()
        expect(page.locator("#forgotten")).to_be_visible()
        expect(page.locator("#mine li")).to_have_count(1)  # still in this browser
        assert httpx.get(url, headers=key, timeout=30).status_code == 404
        # a rating is the person's word: the kept ones go with it
        rate_from_search(page, *RATED[1], stars=4)
        expect(page.locator("#recs")).to_have_attribute("data-ratings", "2")
        expect(page.locator("#forgotten")).to_be_hidden()
        assert len(httpx.get(url, headers=key, timeout=30).json()["history"]) == 2
        page.locator("#settings summary").click()
        asked: list[str] = []
        # erasing takes a second word: a dismissed question erases nothing
        page.once("dialog", lambda d: (asked.append(d.message), d.dismiss()))
        page.get_by_role("button", name="Start over as a new user").click()
        expect(page.locator("#mine li")).to_have_count(2)
        assert asked == [
            "Erase your 2 ratings from the service and start over as a new user? "
            "This cannot be undone."
        ]
        assert httpx.get(url, headers=key, timeout=30).status_code == 200
        page.once("dialog", lambda d: d.accept())
        page.get_by_role("button", name="Start over as a new user").click()
        expect(page.locator("#mine li")).to_have_count(0)
        expect(page.locator("#recs-status")).to_have_text(
            "You are a new user: your earlier ratings were erased. "
            "Rate an item to get recommendations."
        )
        expect(page.locator("#user-id")).not_to_have_text(user)
        assert httpx.get(url, headers=key, timeout=30).status_code == 404
        expect(page.get_by_role("alert")).to_be_hidden()
    finally:
        context.close()


def test_a_refresh_overtaken_by_a_later_one_draws_nothing(
    browser: Any, make_server: Callable[..., Any]
) -> None:
    """Another tab's ratings refresh this tab's list. Its first refresh answering only
    after a later one was drawn: the page keeps the later list (it drew the earlier,
    one rating short, over it)."""
    live = make_server(page_api_key=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    held: list[tuple[Any, dict[str, Any]]] = []

    def hold_first(route: Any) -> None:
        answer = route.fetch()
        if held or answer.status != 200:  # before the other tab created the user: a 404
            route.fulfill(response=answer)
            return
        stale = answer.json()
        stale["items"][0]["title"] = "STALE LIST"  # to tell it apart once drawn
        held.append((route, stale))  # answered below, after a later list is drawn

    try:
        watcher, rater = context.new_page(), context.new_page()
        watcher.route("**/recommendations?*", hold_first)
        watcher.goto(live.url + "/")
        rater.goto(live.url + "/")
        rate_from_search(rater, *RATED[0], stars=5)
        expect(rater.locator("#recs")).to_have_attribute("data-ratings", "1")
        rate_from_search(rater, *RATED[1], stars=4)
        expect(rater.locator("#recs")).to_have_attribute("data-ratings", "2")
        expect(watcher.locator("#recs-status")).to_contain_text("from your 2 ratings")
        drawn = watcher.locator("#recs li .title").all_inner_texts()
        assert len(held) == 1 and len(drawn) == 10 and "STALE LIST" not in drawn
        route, stale = held[0]
        route.fulfill(json=stale)
        watcher.wait_for_timeout(500)  # the late answer's turn to draw, were it drawn
        assert watcher.locator("#recs li .title").all_inner_texts() == drawn
        expect(watcher.locator("#recs-status")).to_contain_text("from your 2 ratings")
    finally:
        context.close()


def test_stars_read_before_a_reload_onto_another_scale_are_read_again(
    browser: Any, make_server: Callable[..., Any]
) -> None:
    """After a reload onto a run of another scale, the page kept its old stars, and every
    rating it posted was refused until the page itself was reloaded. Here the stars are
    first read from a 2-10 run (a /ready answered as one would have), then the 1-5 run's
    server refuses the 10 the fifth star posts."""
    import json

    live = make_server(page_api_key=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        ready = httpx.get(f"{live.url}/ready", timeout=30).json()
        before = {**ready, "model": "another@run", "rating_range": [2, 10],
                  "stars": [2, 4, 6, 8, 10], "like_threshold": 8}  # fmt: skip
        page.route("**/ready", lambda route: route.fulfill(
            status=200, content_type="application/json", body=json.dumps(before)))  # fmt: skip
        page.goto(live.url + "/")
        page.wait_for_load_state("networkidle")  # the faked /ready read
        page.unroute("**/ready")  # the server as it is from now on: a 1-5 run
        rate_from_search(page, *RATED[0], stars=5)  # posts 10: refused on 1-5
        expect(page.get_by_role("alert")).to_contain_text("now serves another model")
        rate_from_search(page, *RATED[0], stars=5)  # the stars read again: posts 5
        expect(page.get_by_role("alert")).to_be_hidden()
        expect(page.locator("#recs")).to_have_attribute("data-ratings", "1")
    finally:
        context.close()


def test_a_refusal_after_a_model_change_keeps_its_own_words_unless_off_the_scale(
    browser: Any, make_server: Callable[..., Any]
) -> None:
    """Any 422 after a change of model was told as "another rating scale", where the
    scale was the same and the item unknown to the new run."""
    import json

    live = make_server(page_api_key=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        ready = httpx.get(f"{live.url}/ready", timeout=30).json()
        page.route("**/ready", lambda route: route.fulfill(
            status=200, content_type="application/json",
            body=json.dumps({**ready, "model": "another@run"})))  # fmt: skip
        gone = {"items": [{"item_id": "zz-gone", "title": "Zzyzx Road Test"}]}
        page.route("**/v1/items?*", lambda route: route.fulfill(
            status=200, content_type="application/json", body=json.dumps(gone)))  # fmt: skip
        page.goto(live.url + "/")
        page.wait_for_load_state("networkidle")
        page.unroute("**/ready")  # the model served now has another name, the same scale
        rate_from_search(page, "zzyzx", "Zzyzx Road Test", stars=4)
        expect(page.get_by_role("alert")).to_contain_text("unknown item 'zz-gone'")
        expect(page.get_by_role("alert")).not_to_contain_text("another rating scale")
    finally:
        context.close()


def test_a_run_of_one_value_speaks_of_choices(browser: Any, live_server: str) -> None:
    """On a click run the star said "I chose this", and the page around it "Rate a few
    items", "Your ratings" and "rates 1 (of 1–1)"."""
    import json

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        ready = httpx.get(f"{live_server}/ready", timeout=30).json()
        clicks = {**ready, "rating_range": [1, 1], "stars": [1], "like_threshold": 1}
        page.route("**/ready", lambda route: route.fulfill(
            status=200, content_type="application/json", body=json.dumps(clicks)))  # fmt: skip
        page.goto(live_server + "/")
        expect(page.locator("#tagline")).to_have_text(
            "Choose a few items; the recommendations adapt after every choice."
        )
        expect(page.locator("#mine-heading")).to_contain_text("Your choices")
        expect(page.locator("#recs-status")).to_have_text("Choose an item to get recommendations.")
        page.get_by_label("Title").fill("fargo")
        page.get_by_role("button", name="Search").click()
        star = page.locator("#results li").first.get_by_role("button", name="I chose this")
        expect(star).to_have_attribute("title", "I chose this")
        expect(page.locator("#results li .stars").first).to_have_attribute(
            "aria-label", "Choose Fargo (1996)"
        )
        # a finger's target on a phone: WCAG 2.2's 24 px at the least (23.4 x 25.6 before)
        page.set_viewport_size({"width": 360, "height": 740})
        box = star.bounding_box()
        assert box is not None and box["width"] >= 24 and box["height"] >= 24, box
    finally:
        context.close()


def test_a_list_changed_out_of_sight_says_where_it_is(
    tab: Tab, live_server: str, server_api_key: str
) -> None:
    # on a phone the lists stack: the recommendations a rating changed lay below twenty
    # search results, and nothing on screen said they had changed
    page = tab.page
    page.set_viewport_size({"width": 400, "height": 740})
    page.goto(live_server + "/")
    page.locator("#settings summary").click()
    page.get_by_label("API key").fill(server_api_key)
    page.get_by_role("button", name="Save key").click()
    page.locator("#settings summary").click()
    to_recs = page.get_by_role("link", name="Your recommendations changed")
    expect(page.locator("#results li")).to_have_count(20)  # the most popular, unsearched
    page.locator("#results li").nth(2).get_by_role("button", name="5 stars").click()
    expect(page.locator("#recs")).to_have_attribute("data-ratings", "1")
    expect(to_recs).to_be_visible()
    expect(page.locator("#recs-heading")).not_to_be_in_viewport()
    to_recs.click()
    expect(page.locator("#recs-heading")).to_be_in_viewport()
    expect(to_recs).to_be_hidden()
    # a reload changes nothing, and says nothing changed
    page.reload()
    expect(page.locator("#recs")).to_have_attribute("data-ratings", "1")
    expect(to_recs).to_be_hidden()
    # a browser whose key is gone: the user's ratings are read with the key too; once
    # it is saved again they are read in, without a reload
    page.evaluate("localStorage.removeItem('metarec.apiKey')")
    page.reload()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Your ratings are read and saved with this server's API key")
    expect(page.locator("#recs li")).to_have_count(0)
    tab.problems.clear()  # the refused read, logged by the browser as a 401
    page.get_by_label("API key").fill(server_api_key)
    page.get_by_role("button", name="Save key").click()
    expect(page.locator("#recs")).to_have_attribute("data-ratings", "1")
    expect(page.locator("#recs li")).to_have_count(10)
    expect(alert).to_be_hidden()
    page.locator("#settings summary").click()
    # on a wide screen the list is in view beside the search: nothing to say
    page.set_viewport_size({"width": 1280, "height": 900})
    page.evaluate("window.scrollTo(0, 0)")
    rate_from_search(page, *RATED[1], stars=5)
    expect(page.locator("#recs")).to_have_attribute("data-ratings", "2")
    expect(to_recs).to_be_hidden()
    assert not tab.problems, tab.problems


def test_search_says_when_it_shows_the_first_results_and_shows_more(
    tab: Tab, live_server: str
) -> None:
    # "20 matching" read as the total, and nothing past the 20th could be reached
    page = tab.page
    page.goto(live_server + "/")
    page.get_by_label("Title").fill("the")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#search-status")).to_have_text("The first 20 items matching “the”.")
    page.get_by_role("button", name="Show more").click()
    expect(page.locator("#results li")).to_have_count(40)
    page.get_by_label("Title").fill("fargo")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#search-status")).to_have_text("1 item matching “fargo”.")
    expect(page.get_by_role("button", name="Show more")).to_be_hidden()
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    # a key no header can carry was "the service cannot be reached" at the next rating
    page.get_by_text("Settings").click()
    page.get_by_label("API key").fill("sekrit€")
    page.get_by_role("button", name="Save key").click()
    expect(page.get_by_role("alert")).to_contain_text("visible ASCII")
    assert page.evaluate("localStorage.getItem('metarec.apiKey')") is None
    tab.problems.clear()  # the page logs each error it shows
    page.get_by_label("API key").fill("my secret key")  # spaces inside, as the server takes
    page.get_by_role("button", name="Save key").click()
    expect(page.get_by_role("alert")).to_be_hidden()
    assert page.evaluate("localStorage.getItem('metarec.apiKey')") == "my secret key"
    page.set_viewport_size({"width": 320, "height": 800})  # no sideways scrolling
    assert page.evaluate("document.documentElement.scrollWidth") <= 320
    assert not tab.problems, tab.problems


def test_show_more_stops_at_the_servers_search_cap(
    tab: Tab, make_server: Callable[..., Any]
) -> None:
    # a fixed 100 asked a server capped lower for more than it gives: a 422
    live = make_server(max_search_results=30)
    page = tab.page
    page.goto(live.url + "/")
    page.get_by_label("Title").fill("the")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("button", name="Show more").click()
    expect(page.locator("#results li")).to_have_count(30)
    expect(page.locator("#search-status")).to_contain_text("type more of the title")
    expect(page.get_by_role("button", name="Show more")).to_be_hidden()
    expect(page.get_by_role("alert")).to_be_hidden()
    assert not tab.problems, tab.problems


def test_a_run_of_binary_feedback_draws_two_stars_that_post_its_ends(
    tab: Tab,
    make_server: Callable[..., Any],
    server_api_key: str,
    shared_data: Path,
    service_run: Path,
    tmp_path: Path,
) -> None:
    """Five stars on a 0/1 run of bce posted 0, 0.25 and 0.5 as three ways to say no:
    the page draws what /ready's ``stars`` say, here a no and a yes."""
    from metarec.config import TrainConfig
    from metarec.data import load_dataset
    from metarec.pipeline import encode_catalogue, fit_recommender

    ds = load_dataset("ml-100k", root=shared_data)
    liked = ds.interactions.assign(rating=(ds.interactions["rating"] >= 4).astype(float))
    catalogue = encode_catalogue(ds.items, "tfidf", cache_dir=tmp_path / "emb", progress=False)
    cfg = TrainConfig(objective="bce", epochs=1, max_train_users=60, seed=0, device="cpu")
    rec, _ = fit_recommender(catalogue, liked, cfg, rating_range=(0.0, 1.0), progress=False)
    assert rec.cfg.support_positives == "liked"
    rec.save(tmp_path / "binary")
    live = make_server(run=tmp_path / "binary", page_api_key=True)
    page = tab.page
    page.goto(live.url + "/")
    for (query, title), answer in zip(RATED[:2], ("Yes", "No"), strict=True):
        page.get_by_label("Title").fill(query)
        page.get_by_role("button", name="Search").click()
        row = page.locator("#results li").filter(has_text=title)
        expect(row.locator(".stars button")).to_have_count(2)
        row.get_by_role("button", name=answer).click()
        expect(page.locator("#mine li").filter(has_text=title)).to_have_count(1)
    # the answers, drawn back: yes lights both stars, no the first
    yes = page.locator("#mine li").filter(has_text=RATED[0][1])
    expect(yes.locator(".stars button.on")).to_have_count(2)
    no = page.locator("#mine li").filter(has_text=RATED[1][1])
    expect(no.locator(".stars button.on")).to_have_count(1)
    user_id = page.locator("#user-id").text_content()  # in the closed settings: no inner text
    got = httpx.get(
        f"{live.url}/v1/users/{user_id}", headers={"X-API-Key": server_api_key}, timeout=30
    )
    assert got.status_code == 200, got.text
    ratings = sorted(h["rating"] for h in got.json()["history"] if h["type"] == "rating")
    assert ratings == [0.0, 1.0]
    assert not tab.problems, tab.problems
    # a reload onto a run of five stars: the page kept drawing two (no, yes) until the
    # person reloaded it; the next recommendations name the new model and the stars follow
    reloaded = httpx.post(
        f"{live.url}/v1/admin/reload",
        json={"run": str(service_run)},
        headers={"X-API-Key": server_api_key},
        timeout=60,
    )
    assert reloaded.status_code == 200, reloaded.text
    page.get_by_label("Title").fill(RATED[2][0])
    page.get_by_role("button", name="Search").click()
    row = page.locator("#results li").filter(has_text=RATED[2][1])
    expect(row.locator(".stars button")).to_have_count(2)  # still the run the page read
    row.get_by_role("button", name="Yes").click()
    expect(page.locator("#recs li").first).to_be_visible()
    expect(row.locator(".stars button")).to_have_count(5)
    expect(page.locator("#mine li").first.locator(".stars button")).to_have_count(5)
    assert not tab.problems, tab.problems


def _serve_cdn(page: Any, bodies: dict[str, bytes]) -> list[str]:
    """Answer the docs pages' CDN requests from ``bodies`` (the test machine has no
    internet); the browser still sees them as cdn.jsdelivr.net's, so its integrity and
    content-policy checks apply. Returns the URLs asked for."""
    asked: list[str] = []

    def fulfil(route: Any) -> None:
        url = route.request.url
        asked.append(url)
        kind = "text/css" if url.endswith(".css") else "application/javascript"
        headers = {"access-control-allow-origin": "*"}  # as jsDelivr answers
        route.fulfill(status=200, body=bodies[url], content_type=kind, headers=headers)

    page.route("https://cdn.jsdelivr.net/**", fulfil)
    return asked


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_the_docs_pages_run_no_cdn_script_other_than_the_pinned_one(
    tab: Tab, live_server: str, path: str
) -> None:
    """The docs pages' scripts come from a CDN and run on the origin where the page keeps
    the API key: a changed file must not run. Each CDN file here is answered with a
    script that marks the window, which the integrity hash must stop."""
    from metarec.service.docs_pages import PINNED_ASSETS

    tampered = b"window.tampered = true; document.title = 'tampered';"
    asked = _serve_cdn(tab.page, {a.url: tampered for a in PINNED_ASSETS})
    tab.page.goto(live_server + path)
    tab.page.wait_for_load_state("load")
    assert asked and set(asked) <= {a.url for a in PINNED_ASSETS}
    assert tab.page.evaluate("window.tampered === undefined")
    assert "tampered" not in tab.page.title()
    assert any("integrity" in p for p in tab.problems), tab.problems
    # a viewer that did not load left a blank page: it says so, and where the schema is
    unloaded = tab.page.locator("#unloaded")
    expect(unloaded).to_be_visible()
    expect(unloaded).to_contain_text("could not be loaded from jsDelivr")
    expect(unloaded.get_by_role("link", name="/openapi.json")).to_be_visible()
    assert not any("favicon" in p for p in tab.problems), tab.problems


def test_a_keyboard_rates_without_losing_its_place(
    browser: Any, make_server: Callable[..., Any]
) -> None:
    """Keyboard use, as a screen-reader user meets it. Each item's stars were five Tab
    stops; a rating out disabled every star, so focus fell to the page's body, Tab
    skipped every star, and the answer pulled focus back to the star even from a field
    the person had moved on to; a hidden banner or notice dropped focus on the body;
    Start over erased at one key press."""
    live = make_server(page_api_key=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.goto(live.url + "/")
        expect(page.locator("#results li")).to_have_count(20)
        # the lists redrawn at each rating are not live regions: the status line speaks
        assert page.locator("[aria-live]").count() == 0
        first = page.locator("#results li").nth(0).locator(".stars button")
        second = page.locator("#results li").nth(1).locator(".stars button")
        first.nth(0).focus()
        page.keyboard.press("Tab")  # one stop an item
        expect(second.nth(0)).to_be_focused()
        page.keyboard.press("Shift+Tab")
        page.keyboard.press("End")
        expect(first.nth(4)).to_be_focused()
        page.keyboard.press("ArrowLeft")
        expect(first.nth(3)).to_be_focused()
        expect(first.nth(3)).to_have_accessible_name("4 stars out of 5")

        # a slow answer: focus stays on the star, then stays where the person moved
        held: list[Any] = []
        page.route("**/v1/users", lambda route: held.append(route))
        page.keyboard.press("Enter")
        page.wait_for_function("document.querySelector('#recs').ariaBusy === 'true'")
        expect(first.nth(3)).to_be_focused()
        expect(first.nth(3)).to_have_attribute("aria-disabled", "true")
        page.get_by_label("Title").focus()
        while not held:
            page.wait_for_timeout(50)
        held[0].continue_()
        expect(page.locator("#recs")).to_have_attribute("data-ratings", "1")
        expect(page.get_by_label("Title")).to_be_focused()
        rated = page.locator("#results li").nth(0).locator(".stars button")
        expect(rated.nth(3)).to_have_attribute("aria-current", "true")
        expect(rated.nth(3)).to_have_attribute("tabindex", "0")  # the group's stop: its rating

        # the error banner leaves the focused control's room free, closes at Escape and
        # gives focus back from its Dismiss button
        page.route("**/v1/users/*/events", lambda route: route.fulfill(status=503))
        rated.nth(4).focus()
        page.keyboard.press("Enter")
        expect(page.get_by_role("alert")).to_be_visible()
        banner = page.locator("#error").bounding_box()
        padding = page.evaluate("document.documentElement.style.scrollPaddingTop")
        assert banner is not None and float(padding.removesuffix("px")) >= banner["height"]
        page.keyboard.press("Escape")
        expect(page.get_by_role("alert")).to_be_hidden()
        expect(rated.nth(4)).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.get_by_role("alert")).to_be_visible()
        page.locator("#error-close").focus()
        page.keyboard.press("Enter")
        expect(page.get_by_role("alert")).to_be_hidden()
        expect(rated.nth(4)).to_be_focused()
        page.unroute("**/v1/users/*/events")

        # "Show more" goes on to the first new result
        page.locator("#more").focus()
        page.keyboard.press("Enter")
        expect(page.locator("#results li")).to_have_count(40)
        expect(page.locator("#results li").nth(20).locator(".stars button").nth(0)).to_be_focused()
    finally:
        context.close()
