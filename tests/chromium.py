"""Debian's Chromium, as every browser test and the screenshot drive it (`playwright install` cannot download a
browser here): its path and the flags that let it run headless in a container, offline."""

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
