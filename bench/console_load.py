#!/usr/bin/env python3
"""First page load of the web console on loopback, as a browser measures it.

    python3 bench/console_load.py --base-url http://127.0.0.1:8000 --api-key KEY [--runs 20]

Signs in once (the session cookie is kept), then loads the home page `--runs` times in fresh
pages of one headless Chromium (Debian's, driven by Playwright; what scripts/test installs) and
reports, from the browser's own Navigation and Paint Timing entries, the median and the slowest
of: time to first byte, DOMContentLoaded, load, first contentful paint, and "home ready" (the
home page's data rendered: its license panel filled in from the API). Each run is a cold load
(`Cache-Control: no-cache` makes the browser revalidate every file; the run's HTTP cache is
fresh), so the figures include every file the page needs. Also prints the bytes transferred
(compressed) per load. Run from the repository root against a running server.
"""

import argparse
import statistics
import sys

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        signed_in = browser.new_context()
        response = signed_in.request.post(
            f"{args.base_url}/api/v1/session", data={"api_key": args.api_key}
        )
        if response.status != 201:
            sys.exit(f"sign-in failed: {response.status} {response.text()}")
        cookies = signed_in.cookies()
        signed_in.close()

        rows = []
        transferred = []
        for _ in range(args.runs):
            # A fresh context per run: an empty HTTP cache, the same session cookie.
            context = browser.new_context()
            context.add_cookies(cookies)
            page = context.new_page()
            sizes = []
            page.on(
                "requestfinished",
                lambda request: sizes.append(request.sizes()["responseBodySize"]),
            )
            page.goto(f"{args.base_url}/", wait_until="load")
            page.wait_for_selector("[data-ready=home]", timeout=10_000)
            timing = page.evaluate(
                """() => {
                  const nav = performance.getEntriesByType('navigation')[0];
                  const fcp = performance.getEntriesByName('first-contentful-paint')[0];
                  const ready = performance.getEntriesByName('console:home-ready')[0];
                  return {
                    ttfb: nav.responseStart - nav.startTime,
                    dcl: nav.domContentLoadedEventEnd - nav.startTime,
                    load: nav.loadEventEnd - nav.startTime,
                    fcp: fcp ? fcp.startTime : null,
                    ready: ready ? ready.startTime : null,
                  };
                }"""
            )
            rows.append(timing)
            transferred.append(sum(sizes))
            context.close()
        browser.close()

    print(f"{args.runs} cold loads of {args.base_url}/ (signed in), milliseconds:")
    print(f"{'':>24} {'median':>8} {'max':>8}")
    for key, label in [
        ("ttfb", "time to first byte"),
        ("dcl", "DOMContentLoaded"),
        ("load", "load"),
        ("fcp", "first contentful paint"),
        ("ready", "home ready (data shown)"),
    ]:
        values = [r[key] for r in rows if r[key] is not None]
        if not values:
            print(f"{label:>24} {'n/a':>8}")
            continue
        print(f"{label:>24} {statistics.median(values):8.1f} {max(values):8.1f}")
    print(f"bytes per load (bodies as sent): median {statistics.median(transferred):,.0f}")


if __name__ == "__main__":
    main()
