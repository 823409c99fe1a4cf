"""The HTTP gateway: the native API, HiPS serving, the page (and the p2api face)."""
