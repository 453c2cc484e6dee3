#!/usr/bin/env bash
# Opens a `selfcon report` folder's index.html in a real headless browser (Debian's chromium:
# apt-get install chromium) from the file system, as a user would, and saves a full-page
# screenshot to look at. Checks that every picture the page references exists and decodes, that the
# browser rendered the page (the DOM it built has every <img>), and that the screenshot is not blank.
#
#   scripts/check-report.sh REPORT_DIR [SCREENSHOT.png]
set -euo pipefail
dir=$(cd "${1:?usage: scripts/check-report.sh REPORT_DIR [SCREENSHOT.png]}" && pwd)
shot=${2:-$dir/screenshot.png}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$browser" ] || { echo "check-report: no chromium found (apt-get install chromium)" >&2; exit 2; }
[ -f "$dir/index.html" ] || { echo "check-report: $dir/index.html does not exist" >&2; exit 2; }
flags=(--headless --no-sandbox --disable-gpu --hide-scrollbars --allow-file-access-from-files)
dom=$(mktemp)
trap 'rm -f "$dom"' EXIT
"$browser" "${flags[@]}" --virtual-time-budget=5000 --dump-dom "file://$dir/index.html" > "$dom" 2>/dev/null
"$browser" "${flags[@]}" --virtual-time-budget=5000 --window-size=1800,5200 --screenshot="$shot" \
    "file://$dir/index.html" >/dev/null 2>&1
python3 - "$dir" "$dom" "$shot" <<'PY'
import re, struct, sys, zlib
folder, dom_path, shot = sys.argv[1:4]
page = open(f"{folder}/index.html", encoding="utf-8").read()
dom = open(dom_path, encoding="utf-8").read()
sources = re.findall(r'<img src="([^"]+)"', page)
if not sources:
    sys.exit("check-report: index.html shows no picture")
rendered = re.findall(r'<img src="([^"]+)"', dom)
missing = [s for s in sources if s not in rendered]
if missing:
    sys.exit(f"check-report: the browser's page lacks {missing}")
# index.html marks a picture the browser could not load (onerror → data-broken).
broken = re.findall(r'<img src="([^"]+)"[^>]*data-broken', dom)
if broken:
    sys.exit(f"check-report: the browser could not load {broken}")

def png_size_and_colours(path):
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        sys.exit(f"check-report: {path} is not a PNG")
    width, height = struct.unpack(">II", data[16:24])
    # Distinct bytes of the compressed image data's first chunk: a cheap "not blank" signal.
    idat = b"".join(data[i + 8:i + 8 + struct.unpack(">I", data[i:i + 4])[0]]
                    for i in [m.start() - 4 for m in re.finditer(b"IDAT", data)])
    raw = zlib.decompress(idat)
    return width, height, len(set(raw[: 3 * 1024 * 1024]))

for s in sources:
    w, h, distinct = png_size_and_colours(f"{folder}/{s}")
    if distinct < 20:
        sys.exit(f"check-report: {s} looks blank ({distinct} distinct bytes)")
w, h, distinct = png_size_and_colours(shot)
if distinct < 50:
    sys.exit(f"check-report: the screenshot looks blank ({distinct} distinct bytes)")
print(f"check-report: {len(sources)} pictures shown by {folder}/index.html; screenshot {w}x{h} at {shot}")
PY
