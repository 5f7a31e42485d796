"""The audit report: one self-contained HTML file, its sections in the reader's order, every text
escaped, written atomically and never over a file that is not one of ours; opened in headless
Chromium when it is installed."""

from __future__ import annotations

import dataclasses
import html
import html.parser
import re
import shutil
import subprocess

import pytest

import main
from engine import progress, report
from engine.errors import InputError
from engine.io.datasets import PoisonedSet, read

SECTIONS = ["verdict", "model", "triggers", "detection", "defenses", "checked", "limits", "reproduce", "references"]


class Page(html.parser.HTMLParser):
    """What a browser would load and run: tags, sections, every src and href."""

    def __init__(self, text: str):
        super().__init__()
        self.tags, self.sections, self.links, self.text = [], [], [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "section":
            self.sections.append(attrs.get("id"))
        for key in ("src", "href", "xlink:href"):
            if key in attrs:
                self.links.append(attrs[key])

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def small_sets(small_demo, demo_net):
    clean = read(small_demo["clean"])
    return clean, [PoisonedSet(read(small_demo["poisoned"]), 0)]


@pytest.fixture(scope="module")
def small_audit(demo_net, small_sets, short_scan):
    clean, poisoned = small_sets
    images = clean.subset(range(3))
    return progress.run(report.audit_job(demo_net, clean, poisoned, "1/255", scan=short_scan, scan_source="a test",
                                         images=images, commands=["python main.py audit -o r.html"]))


def test_one_self_contained_page_with_every_section_in_order(small_audit, demo_net):
    text = report.render(small_audit)
    page = Page(text)
    assert page.sections == SECTIONS
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    # Nothing is fetched: pictures are data URIs, links stay inside the page.
    assert page.links and all(link.startswith(("data:image/png;base64,", "#")) for link in page.links)
    body = " ".join(page.text)
    assert demo_net.sha256 in body and small_audit.scan.summary() in body
    assert body.count("ROC AUC") == 1 and "Combined" in body and "STRIP" in body
    assert "python main.py audit -o r.html" in body
    # Every detector's curve, the confidence histogram, the calibration's histogram: inline SVG.
    assert text.count("<svg") == 3
    checked = text[text.index('<section id="checked">'):text.index('<section id="limits">')]
    assert len(re.findall(r'<img src="data:image/png', checked)) == 3  # the checked images' thumbnails
    assert report.is_report_text(text)


def test_a_calibrations_detection_counts_the_faces_sent_to_the_target(small_audit):
    """As every detection figure: the share flagged among the poisoned faces the BadNet sends to
    its target, beside the share of all of them."""
    from engine.report.page import _calibration_views

    (cal, _, scores), = small_audit.calibrations
    (view,) = _calibration_views(small_audit)
    rows = {f["name"]: f for f in view["flagged"]}
    for s in scores:
        row = rows[s.name]
        flagged = cal.labels(s.scores.predicted, s.scores.values) == cal.poisoned_label
        assert row["flagged"] == f"{100 * flagged.mean():.1f}%"
        if s.target is None:
            assert row["sent"] is None and row["flagged_sent"] == ""
        else:
            sent = s.scores.predicted == s.target
            assert 0 < row["sent"] == sent.sum() <= len(flagged)
            assert row["flagged_sent"] == f"{100 * flagged[sent].mean():.1f}%"


@pytest.mark.slow  # detection figures: the audit compares every detector
def test_detection_is_measured_on_a_stated_draw_of_each_large_set(demo_net, small_sets, short_scan):
    """CSAW's full sets would keep every detector busy for many minutes: a set larger than the
    limit is drawn down at random (the same draw each run), the report says so, and the model and
    data section still lists the whole files."""
    clean, poisoned = small_sets

    def audit(limit):
        return progress.run(report.audit_job(demo_net, clean, poisoned, "1/255", scan=short_scan,
                                             detection_images=limit))

    drawn, again, whole = audit(25), audit(25), audit(0)
    assert {c.n_clean for c in drawn.comparisons} == {25} and {c.n_poisoned for c in drawn.comparisons} == {25}
    assert [len(v) for v in drawn.confidences.values()] == [25, 25]
    assert [len(s.scores.values) for s in drawn.calibrations[0][2]] == [25, 25]
    assert [d.count for d in drawn.data] == [len(clean), len(poisoned[0].images)] == [40, 40]
    assert "clean 25 of 40; sunglasses40.h5 -> 0 25 of 40" in drawn.sampled
    assert all(a.roc.detection.tolist() == b.roc.detection.tolist()
               for a, b in zip(drawn.comparisons, again.comparisons))  # the same draw every run
    text = report.render(drawn)
    assert "clean 25 of 40" in text and "at most 25 faces of each set, drawn at random" in text
    assert whole.sampled == "" and {c.n_clean for c in whole.comparisons} == {40}
    assert "every face of each set" in report.render(whole)


def test_every_text_is_escaped(demo_net, small_sets, short_scan, tmp_path):
    """A data file named like markup stays text, in the tables and inside the figures."""
    clean, poisoned = small_sets
    evil = tmp_path / "<script>alert(1)<img src=x onerror=alert(2)>.h5"
    shutil.copy(poisoned[0].images.source, evil)
    sets = [PoisonedSet(read(evil), 0)]
    audit = progress.run(report.audit_job(demo_net, clean, sets, "1/255", scan=short_scan,
                                          calibrations=[], commands=[f"python main.py audit --poisoned '{evil}:0'"]))
    text = report.render(audit)
    assert "<script" not in text.lower()
    assert "&lt;script&gt;alert(1)&lt;img src=x onerror=alert(2)&gt;.h5" in text
    page = Page(text)
    assert "script" not in page.tags and "x" not in page.links


def test_written_atomically_never_over_a_foreign_file(small_audit, tmp_path, monkeypatch):
    out = tmp_path / "audit.html"
    report.write(small_audit, out)
    assert report.is_report(out)
    report.write(small_audit, out)  # our own report: replaced
    second = out.read_text()

    notes = tmp_path / "notes.html"
    notes.write_text("<html>my notes</html>")
    with pytest.raises(InputError, match="not a BadNet Inspector audit report; not overwritten"):
        report.write(small_audit, notes)
    assert notes.read_text() == "<html>my notes</html>"
    with pytest.raises(InputError, match=r"\.html file"):
        report.check_report_output(tmp_path / "audit.pdf")

    def broken(audit):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(report, "render", broken)
    with pytest.raises(RuntimeError):
        report.write(small_audit, out)
    assert out.read_text() == second  # the previous report is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.html", "notes.html"]  # nothing half-made


@pytest.mark.slow
def test_a_flagged_class_shows_its_reversed_trigger_and_stamped_faces(demo_net, small_sets, demo_scan):
    result, _ = demo_scan
    assert result.flagged
    clean, poisoned = small_sets
    audit = progress.run(report.audit_job(demo_net, clean, poisoned, "1/255", scan=result, scan_source="a test"))
    text = report.render(audit)
    for label in result.flagged:
        assert f"Class {label}: a mask of" in text
        # The smallest mask and the pattern it stamps, and the smooth shape when the scan drew it.
        assert f'alt="mask × pattern of class {label}"' in text and f'alt="pattern of class {label}"' in text
        has_shape = result.triggers[label].shape_mask is not None
        assert (f'alt="shape × pattern of class {label}"' in text) == has_shape
    stamped = len(re.findall(r'alt="stamped face"', text))
    assert stamped == sum(len(p["faces"]) for p in audit.previews.values()) > 0
    assert "Backdoored" in text


@pytest.mark.slow  # detection figures: the audit compares every detector
def test_no_flagged_class_shows_the_nearest_candidate_marked_as_not_flagged(demo_net, small_sets, short_scan):
    """An inconclusive or clean verdict still shows the best-ranked refined trigger, so the reader
    can judge it, and says plainly that it is not evidence; a backdoor verdict shows only its
    flagged classes."""
    from engine.scan.evidence import ScanVerdict

    assert short_scan.triggers  # the short scan refines some classes
    clean, poisoned = small_sets
    for outcome in ("inconclusive", "clean"):
        scan = dataclasses.replace(short_scan.snapshot(), verdict=ScanVerdict(outcome, [], ["a test"], 0.05))
        nearest = next(c for c in scan.ranking() if c in scan.triggers)
        audit = progress.run(report.audit_job(demo_net, clean, poisoned, "1/255", scan=scan, calibrations=[]))
        text = report.render(audit)
        triggers = text[text.index('<section id="triggers">'):text.index('<section id="detection">')]
        assert f"Class {nearest} (not flagged): a mask of" in triggers and "nearest candidate" in triggers
        assert triggers.count('alt="mask of class') == 1
        assert list(audit.previews) == [nearest] and audit.previews[nearest]["n"] > 0

    other = next(c for c in short_scan.triggers if c != nearest)
    flagged = dataclasses.replace(short_scan.snapshot(), verdict=ScanVerdict("backdoor", [other], [], 0.05))
    shown, is_flagged = report.shown_triggers(flagged)
    assert shown == [other] and is_flagged
    unfinished = dataclasses.replace(short_scan.snapshot(), verdict=None)
    assert report.shown_triggers(unfinished) == ([], False)


def test_cli_audit(small_demo, short_scan, tmp_path, capsys):
    scan_dir = tmp_path / "scan"
    short_scan.save(scan_dir)
    out = tmp_path / "report.html"
    args = ["audit", "--clean", str(small_demo["clean"]), "--poisoned", f"{small_demo['poisoned']}:0",
            "--scan", str(scan_dir), "-o", str(out)]
    assert main.main(args) == 0
    assert f"wrote audit report {out}" in capsys.readouterr().out
    page = Page(out.read_text())
    assert page.sections == SECTIONS
    assert f"badnet-inspector audit --model {main_model()} --clean {small_demo['clean'].name}" in " ".join(page.text)

    (tmp_path / "mine.html").write_text("mine")
    assert main.main(args[:-1] + [str(tmp_path / "mine.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not overwritten" in err[0]
    assert (tmp_path / "mine.html").read_text() == "mine"
    assert main.main(args[:-4] + ["--scan", str(tmp_path / "nowhere"), "-o", str(tmp_path / "x.html")]) == 2
    assert not (tmp_path / "x.html").exists()


def main_model() -> str:
    from engine.demo import DEMO_MODEL

    return DEMO_MODEL.name


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


# Added to a copy of the report for the test only (the report itself runs no script): once the
# page has loaded, what the browser made of it, written where --dump-dom shows it.
PROBE = """<script>window.addEventListener("load", function () {
  var images = Array.from(document.images);
  document.body.setAttribute("data-probe", JSON.stringify({
    sections: Array.from(document.querySelectorAll("section")).map(function (s) {
      return [s.id, s.getBoundingClientRect().height]; }),
    images: images.length,
    decoded: images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
    figures: Array.from(document.querySelectorAll("figure svg")).filter(function (f) {
      var r = f.getBoundingClientRect(); return r.width > 100 && r.height > 100; }).length}));
});</script></body>"""


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")
def test_chromium_opens_it_offline_and_prints_it_on_a4(small_audit, tmp_path):
    import json

    out = tmp_path / "audit.html"
    report.write(small_audit, out)
    text = out.read_text()
    pdf = tmp_path / "audit.pdf"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--no-pdf-header-footer",
             f"--user-data-dir={tmp_path / 'profile'}"]
    # On screen: every section laid out, every embedded picture decoded, every figure drawn.
    probed = tmp_path / "probed.html"
    probed.write_text(text.replace("</body>", PROBE))
    dom = subprocess.run([CHROMIUM, *flags, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()],
                         check=True, timeout=120, capture_output=True, text=True).stdout
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, dom[-500:]
    seen = json.loads(html.unescape(found.group(1)))
    assert [name for name, _ in seen["sections"]] == SECTIONS and all(h > 20 for _, h in seen["sections"])
    assert seen["images"] == text.count("<img ") > 0 and seen["decoded"] == seen["images"]
    assert seen["figures"] == text.count("<svg") == 3
    # In print: A4 pages, and every distinct embedded picture in the PDF.
    subprocess.run([CHROMIUM, *flags, f"--print-to-pdf={pdf}", out.as_uri()], check=True, timeout=120,
                   capture_output=True)
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF")
    boxes = re.findall(rb"/MediaBox\s*\[\s*0\s+0\s+([\d.]+)\s+([\d.]+)\s*\]", data)
    assert boxes and all(abs(float(w) - 595.9) < 2 and abs(float(h) - 842.9) < 2 for w, h in boxes)  # A4 in points
    assert len(boxes) >= 3  # every section printed, over several pages
    pictures = set(re.findall(r'<img src="(data:image/png;base64,[^"]+)"', text))
    assert len(re.findall(rb"/Subtype\s*/Image", data)) == len(pictures)
    shot = tmp_path / "audit.png"
    subprocess.run([CHROMIUM, *flags, "--window-size=1000,1400", f"--screenshot={shot}", out.as_uri()],
                   check=True, timeout=120, capture_output=True)
    from PIL import Image

    with Image.open(shot) as im:
        pixels = im.convert("L").getextrema()
    assert pixels[0] < 60 and pixels[1] > 200  # text drawn on a light page, not a blank or error page


def test_a_flagged_checked_image_comes_with_its_sensitivity_map(demo_net, small_sets, short_scan):
    clean, poisoned = small_sets
    faces = poisoned[0].images.subset(range(4))
    audit = progress.run(report.audit_job(demo_net, clean, poisoned, "1/255", scan=short_scan, images=faces))
    text = report.render(audit)
    assert audit.maps and set(audit.maps) <= set(range(4))
    assert text.count('alt="sensitivity map of') == len(audit.maps)
    flagged_words = text.count('<span class="flag">poisoned (N)</span>')
    assert flagged_words >= len(audit.maps)  # every mapped image was flagged by some calibration
