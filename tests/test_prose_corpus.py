"""scripts/make_prose_corpus.py: paragraphs from HTML and POD, the prose filter, hand-checked cases."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("make_prose_corpus", ROOT / "scripts" / "make_prose_corpus.py")
mpc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mpc)

PROSE = ("The server reads its configuration file when it starts, and it will reread the file when it "
         "receives a hangup signal, so that a running system can be reconfigured without a restart.")


def test_html_paragraphs_skip_pre_tables_and_scripts():
    page = (f"<html><head><title>T</title><script>var x = 1;</script></head><body><h1>Intro</h1>"
            f"<p>{PROSE[:60]}<code>postgres</code>{PROSE[60:]}</p><pre>SELECT * FROM t;</pre>"
            "<table><tr><td>cell</td></tr></table><ul><li>item one</li></ul></body></html>")
    paras = [p.strip() for p in mpc.html_paragraphs(page) if p.strip()]
    assert paras == ["Intro", PROSE[:60] + "postgres" + PROSE[60:], "item one"]


def test_plain_paragraphs_drop_pod_commands_and_verbatim_blocks():
    pod = (f"=head1 NAME\n\n{PROSE[:80]}\n{PROSE[80:]}\n\n    my $x = 1;\n\n"
           "See B<perlrun> for I<details> of the switches.\n")
    assert mpc.plain_paragraphs(pod) == [PROSE[:80] + " " + PROSE[80:], "See perlrun for details of the switches."]


def test_prose_filter():
    assert mpc.is_prose(PROSE)
    assert not mpc.is_prose("int main(void) { return foo(a, b) + bar[c] * baz; } /* the end of the program */ "
                            "while (x < y) { x = x + 1; } return 0; and the rest of it")  # code symbols
    assert not mpc.is_prose("Short sentence that is English.")  # too short
    assert not mpc.is_prose("Der Server liest seine Konfigurationsdatei beim Start und liest sie erneut, wenn "
                            "er ein Signal empfängt, damit ein laufendes System ohne Neustart umkonfiguriert wird.")
    assert not mpc.is_prose(PROSE.rstrip("."))  # no sentence end
    assert not mpc.is_prose("Copyright 2020 The Authors. " + PROSE)
