#!/usr/bin/python3
"""Reference renderer for kiln's chat templates: renders a Jinja template the
way Hugging Face transformers' apply_chat_template does (jinja2's
ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks and the
loopcontrols extension, a `generation` block, a tojson filter that keeps
non-ASCII text, raise_exception and strftime_now), so kiln's C++ renderer can
be checked byte for byte. Run it with Debian's python3-jinja2:

  /usr/bin/python3 tools/jinja_reference.py --template T.jinja --context C.json [--now ISO]
      prints the rendered text exactly (exit 0), or a line "KILN_JINJA_REFUSED"
      then "<ExceptionType>: <message>" (exit 3) when jinja2 raises.
  /usr/bin/python3 tools/jinja_reference.py --batch JOBS.json [--out RESULTS.json]
      JOBS.json is a list of {"template": text | "template_path": path,
      "context": {...}, "now": ISO or null}; writes a list of
      {"ok": true, "output": text} or {"ok": false, "error_type": .., "error": ..}
      (ASCII-only JSON, so any text survives the trip).

The context is passed exactly as given: callers that want transformers' own
variables (tools=None, documents=None, bos_token, ...) put them in it.
"""
import argparse
import datetime
import json
import sys

try:
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment
except ImportError:  # the caller checks for this exit code and skips
    sys.stderr.write("jinja_reference.py: python3-jinja2 is not installed "
                     "(apt-get install -y python3-jinja2)\n")
    sys.exit(4)

REFUSED = "KILN_JINJA_REFUSED"


class GenerationBlock(Extension):
    """{% generation %}...{% endgeneration %}: transformers marks assistant
    text with it; rendering is the body itself, in a caller scope."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        call = self.call_method("_render_body")
        return nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _render_body(self, caller):
        return caller()


def make_environment(now):
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[GenerationBlock, "jinja2.ext.loopcontrols"],
    )

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                          separators=separators, sort_keys=sort_keys)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def strftime_now(fmt):
        moment = now if now is not None else datetime.datetime.now()
        return moment.strftime(fmt)

    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def parse_now(text):
    if text is None:
        return None
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is not None:
        raise ValueError("--now must be a local time without a zone")
    return moment


_compiled = {}


def render(template_text, context, now):
    """Returns (True, text) or (False, (exception type, message))."""
    try:
        key = (template_text, now)
        if key not in _compiled:  # batches render one template many times
            _compiled[key] = make_environment(parse_now(now)).from_string(template_text)
        return True, _compiled[key].render(**context)
    except Exception as e:  # every jinja2 failure is a refusal to compare
        return False, (type(e).__name__, str(e))


def read_text(path):
    with open(path, "rb") as f:  # bytes: no newline translation
        return f.read().decode("utf-8")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--template")
    ap.add_argument("--context", help="JSON object of template variables")
    ap.add_argument("--now", help="fixed local time for strftime_now, ISO-8601")
    ap.add_argument("--batch", help="JSON list of render jobs")
    ap.add_argument("--out", help="batch results file (default: stdout)")
    args = ap.parse_args()

    if args.batch:
        with open(args.batch, "rb") as f:
            jobs = json.loads(f.read().decode("utf-8"))
        results = []
        for job in jobs:
            text = job["template"] if "template" in job else read_text(job["template_path"])
            ok, value = render(text, job.get("context", {}), job.get("now"))
            if ok:
                results.append({"ok": True, "output": value})
            else:
                results.append({"ok": False, "error_type": value[0], "error": value[1]})
        data = json.dumps(results, ensure_ascii=True, indent=0)
        if args.out:
            with open(args.out, "w", encoding="ascii") as f:
                f.write(data)
        else:
            sys.stdout.write(data)
        return 0

    if not args.template:
        ap.error("--template (or --batch) is required")
    context = {}
    if args.context:
        with open(args.context, "rb") as f:
            context = json.loads(f.read().decode("utf-8"))
    ok, value = render(read_text(args.template), context, args.now)
    if ok:
        sys.stdout.buffer.write(value.encode("utf-8", "surrogatepass"))
        return 0
    sys.stdout.write(f"{REFUSED}\n{value[0]}: {value[1]}\n")
    return 3


if __name__ == "__main__":
    sys.exit(main())
