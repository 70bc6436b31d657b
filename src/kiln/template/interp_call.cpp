// Callables and scopes that outlive one statement: macros (and call-block
// callers), for loops with their `loop` object, namespace(), and the template
// globals transformers provides (raise_exception, strftime_now) besides
// jinja2's own (range, dict, namespace, joiner).
#include <algorithm>
#include <utility>

#include "kiln/template/builtins.h"
#include "kiln/template/interp.h"

namespace kiln::jinja {
namespace {

struct MacroObject : Object {
  const Stmt* def;
  std::shared_ptr<Frame> closure;  // the scope the macro was defined in, read at call time

  MacroObject(const Stmt* d, std::shared_ptr<Frame> c) : def(d), closure(std::move(c)) {}
  std::string repr() const override { return "<Macro '" + def->name + "'>"; }
  void release() override { closure.reset(); }
  std::string type_name() const override { return "Macro"; }
  bool is_callable() const override { return true; }

  Value call(Interp& in, CallArgs& args) override {
    if (++in.call_depth > in.options.max_call_depth)
      fail("maximum recursion depth exceeded (more than " +
           std::to_string(in.options.max_call_depth) + " nested macro calls)");
    ++in.stats.macro_calls;
    const std::string& name = def->name;
    const auto& params = def->params;
    auto f = in.new_frame(closure);
    std::vector<bool> bound(params.size(), false);
    List extra;
    for (size_t k = 0; k < args.pos.size(); ++k) {
      if (k < params.size()) {
        f->set(params[k], args.pos[k]);
        bound[k] = true;
      } else {
        extra.push_back(args.pos[k]);
      }
    }
    if (!extra.empty() && !def->uses_varargs)
      fail("macro '" + name + "' takes not more than " + std::to_string(params.size()) +
           " argument(s)");
    DictData kwargs;
    Value caller = Value::undefined("No caller defined");
    for (auto& [k, v] : args.kw) {
      const auto it = std::find(params.begin(), params.end(), k);
      if (it != params.end()) {
        const size_t idx = size_t(it - params.begin());
        if (bound[idx]) fail("macro '" + name + "' got multiple values for argument '" + k + "'");
        f->set(k, v);
        bound[idx] = true;
      } else if (k == "caller" && def->uses_caller) {
        caller = v;
      } else if (def->uses_kwargs) {
        kwargs.set(Value::string(k), v);
      } else {
        fail("macro '" + name + "' takes no keyword argument '" + k + "'");
      }
    }
    const auto saved = in.frame;
    in.frame = f;
    // Defaults are evaluated in the macro's scope, so they see earlier parameters.
    const size_t first_default = params.size() - def->defaults.size();
    for (size_t k = 0; k < params.size(); ++k) {
      if (bound[k]) continue;
      if (k >= first_default)
        f->set(params[k], in.eval(*def->defaults[k - first_default]));
      else
        f->set(params[k], Value::undefined("parameter '" + params[k] + "' was not provided"));
    }
    if (def->uses_varargs) f->set("varargs", Value::list(std::move(extra), SeqKind::Tuple));
    if (def->uses_kwargs) f->set("kwargs", Value::dict(std::move(kwargs)));
    if (def->uses_caller) f->set("caller", caller);
    std::string out = in.capture(def->body);
    in.frame = saved;
    --in.call_depth;
    return Value::string(std::move(out));
  }
};

struct LoopObject : Object, std::enable_shared_from_this<LoopObject> {
  std::shared_ptr<const List> items;
  size_t index0 = 0;
  int depth0 = 0;
  const Stmt* def = nullptr;           // for recursive loops: loop(children)
  std::shared_ptr<Frame> outer;        // the scope the loop runs in
  std::optional<Value> last_changed;   // loop.changed() state

  std::string repr() const override {
    return "<LoopContext " + std::to_string(index0 + 1) + "/" + std::to_string(items->size()) + ">";
  }
  std::string type_name() const override { return "LoopContext"; }
  void release() override {
    outer.reset();
    last_changed.reset();
  }
  bool is_callable() const override { return def && def->recursive; }

  Value call(Interp& in, CallArgs& args) override {
    if (!is_callable()) fail("'LoopContext' object is not callable");
    if (args.pos.size() != 1 || !args.kw.empty())
      fail("a recursive loop is called with exactly one iterable");
    if (++in.call_depth > in.options.max_call_depth) fail("maximum recursion depth exceeded");
    // The nested loop runs in the scope of the loop statement, one level deeper.
    std::shared_ptr<Frame> saved = std::exchange(in.frame, outer);
    std::string out = in.capture_loop(*def, args.pos[0], depth0 + 1);
    in.frame = std::move(saved);
    --in.call_depth;
    return Value::string(std::move(out));
  }

  std::optional<Value> attr(Interp&, const std::string& n) override {
    const int64_t len = int64_t(items->size()), k = int64_t(index0);
    if (n == "index") return Value::integer(k + 1);
    if (n == "index0") return Value::integer(k);
    if (n == "revindex") return Value::integer(len - k);
    if (n == "revindex0") return Value::integer(len - k - 1);
    if (n == "first") return Value::boolean(k == 0);
    if (n == "last") return Value::boolean(k == len - 1);
    if (n == "length") return Value::integer(len);
    if (n == "depth") return Value::integer(depth0 + 1);
    if (n == "depth0") return Value::integer(depth0);
    if (n == "previtem")
      return k > 0 ? (*items)[size_t(k - 1)] : Value::undefined("there is no previous item");
    if (n == "nextitem")
      return k + 1 < len ? (*items)[size_t(k + 1)] : Value::undefined("there is no next item");
    if (n == "cycle")
      return Value::object(std::make_shared<NativeFn>(
          "cycle",
          [self = shared_from_this()](Interp&, CallArgs& a) -> Value {
            if (a.pos.empty()) fail("no items for cycling given");
            return a.pos[self->index0 % a.pos.size()];
          },
          true));
    if (n == "changed")
      return Value::object(std::make_shared<NativeFn>(
          "changed",
          [self = shared_from_this()](Interp&, CallArgs& a) -> Value {
            Value now = Value::list(a.pos, SeqKind::Tuple);
            if (self->last_changed && equal(*self->last_changed, now)) return Value::boolean(false);
            self->last_changed = std::move(now);
            return Value::boolean(true);
          },
          true));
    return std::nullopt;
  }
};

struct NamespaceObject : Object {
  DictData attrs;
  mutable bool in_repr = false;  // a namespace may hold itself: print it once
  std::string repr() const override {
    if (in_repr) return "<Namespace {...}>";
    in_repr = true;
    std::string r;
    try {
      r = "<Namespace " + jinja::repr(Value::dict(attrs)) + ">";
    } catch (...) {
      in_repr = false;
      throw;
    }
    in_repr = false;
    return r;
  }
  void release() override { attrs.entries.clear(); }
  std::string type_name() const override { return "Namespace"; }
  bool is_namespace() const override { return true; }
  std::optional<Value> attr(Interp&, const std::string& n) override {
    if (const Value* v = attrs.find(n)) return *v;
    return std::nullopt;
  }
  void set_attr(const std::string& n, Value v) override { attrs.set(Value::string(n), std::move(v)); }
};

// cycler(a, b, ...): .next() returns the items in turn, .current the next one.
struct CyclerObject : Object, std::enable_shared_from_this<CyclerObject> {
  List items;
  size_t pos = 0;
  std::string repr() const override { return "<jinja2.utils.Cycler object>"; }
  void release() override { items.clear(); }
  std::string type_name() const override { return "Cycler"; }
  std::optional<Value> attr(Interp&, const std::string& n) override {
    if (n == "current") return items[pos];
    if (n == "next" || n == "reset")
      return Value::object(std::make_shared<NativeFn>(
          n,
          [self = shared_from_this(), n](Interp&, CallArgs& a) -> Value {
            bind_args(n.c_str(), a, {});
            if (n == "reset") {
              self->pos = 0;
              return Value::none();
            }
            Value v = self->items[self->pos];
            self->pos = (self->pos + 1) % self->items.size();
            return v;
          },
          true));
    return std::nullopt;
  }
};

Value native(const char* name, NativeFn::Fn fn) {
  return Value::object(std::make_shared<NativeFn>(name, std::move(fn)));
}

Value make_dict(const CallArgs& a, const char* fn) {
  DictData d;
  if (a.pos.size() > 1) fail(std::string(fn) + " expected at most 1 argument");
  if (a.pos.size() == 1) {
    const Value& src = a.pos[0];
    if (src.is_dict()) {
      d = src.d();
    } else {
      for (const Value& pair : iterate(src)) {
        const List kv = iterate(pair);
        if (kv.size() != 2) fail("dictionary update sequence element has length " + std::to_string(kv.size()) + "; 2 is required");
        if (!hashable(kv[0])) fail("unhashable type: '" + type_name(kv[0]) + "'");
        d.set(kv[0], kv[1]);
      }
    }
  }
  for (const auto& [k, v] : a.kw) d.set(Value::string(k), v);
  return Value::dict(std::move(d));
}

Value range_fn(Interp&, CallArgs& a) {
  if (!a.kw.empty()) fail("range() takes no keyword arguments");
  if (a.pos.empty() || a.pos.size() > 3)
    fail("range expected 1 to 3 arguments, got " + std::to_string(a.pos.size()));
  int64_t v[3] = {0, 0, 1};
  for (size_t k = 0; k < a.pos.size(); ++k) {
    if (!a.pos[k].is_int())
      fail("'" + type_name(a.pos[k]) + "' object cannot be interpreted as an integer");
  }
  if (a.pos.size() == 1) {
    v[1] = a.pos[0].i;
  } else {
    v[0] = a.pos[0].i;
    v[1] = a.pos[1].i;
    if (a.pos.size() == 3) v[2] = a.pos[2].i;
  }
  if (v[2] == 0) fail("range() arg 3 must not be zero");
  // The sandbox's MAX_RANGE.
  const long double n = v[2] > 0 ? std::max<long double>(0, ((long double)v[1] - v[0] + v[2] - 1) / v[2])
                                 : std::max<long double>(0, ((long double)v[0] - v[1] - v[2] - 1) / -v[2]);
  if (n > 100000)
    fail("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
  List out;
  for (int64_t x = v[0]; v[2] > 0 ? x < v[1] : x > v[1]; x += v[2]) out.push_back(Value::integer(x));
  return Value::list(std::move(out));
}

}  // namespace

Value Interp::make_macro(const Stmt& s) {
  auto m = std::make_shared<MacroObject>(&s, frame);
  track(m);
  return Value::object(std::move(m));
}

Flow Interp::exec_for(const Stmt& s) {
  const Value iterable = eval(*s.expr);
  run_loop(s, iterable, 0);
  return Flow::Normal;
}

std::string Interp::capture_loop(const Stmt& s, const Value& iterable, int depth0) {
  std::string buf;
  std::string* saved = out_;
  out_ = &buf;
  run_loop(s, iterable, depth0);
  out_ = saved;
  return buf;
}

void Interp::run_loop(const Stmt& s, const Value& iterable, int depth0) {
  List items = iterate(iterable);
  const auto parent = frame;
  if (s.cond) {
    List kept;
    for (Value& x : items) {
      step();
      frame = new_frame(parent);
      assign(s.target, x);
      if (truthy(eval(*s.cond))) kept.push_back(std::move(x));
    }
    frame = parent;
    items = std::move(kept);
  }
  auto loop = std::make_shared<LoopObject>();
  track(loop);
  loop->items = std::make_shared<const List>(std::move(items));
  loop->depth0 = depth0;
  loop->def = &s;
  loop->outer = parent;
  const Value loop_value = Value::object(loop);
  const List& xs = *loop->items;
  for (size_t k = 0; k < xs.size(); ++k) {
    step();
    frame = new_frame(parent);
    frame->set("loop", loop_value);
    assign(s.target, xs[k]);
    loop->index0 = k;
    const Flow f = exec(s.body);
    frame = parent;
    if (f == Flow::Break) break;
  }
  if (xs.empty() && !s.else_body.empty()) {
    frame = new_frame(parent);
    exec(s.else_body);
    frame = parent;
  }
}

std::optional<Value> global(Interp&, const std::string& name) {
  if (name == "range") return native("range", range_fn);
  if (name == "dict") return native("dict", [](Interp&, CallArgs& a) { return make_dict(a, "dict"); });
  if (name == "namespace")
    return native("namespace", [](Interp& in, CallArgs& a) {
      auto ns = std::make_shared<NamespaceObject>();
      in.track(ns);
      ns->attrs = make_dict(a, "namespace").d();
      return Value::object(ns);
    });
  if (name == "joiner")
    return native("joiner", [](Interp&, CallArgs& a) {
      const auto p = bind_args("joiner", a, {"sep"});
      const std::string sep = p[0] ? to_str(*p[0]) : ", ";
      auto used = std::make_shared<bool>(false);
      return native("joiner", [sep, used](Interp&, CallArgs&) {
        if (!*used) {
          *used = true;
          return Value::string("");
        }
        return Value::string(sep);
      });
    });
  if (name == "cycler")
    return native("cycler", [](Interp& in, CallArgs& a) -> Value {
      if (a.pos.empty()) fail("at least one item has to be provided");
      auto c = std::make_shared<CyclerObject>();
      in.track(c);
      c->items = a.pos;
      return Value::object(c);
    });
  if (name == "raise_exception")
    return native("raise_exception", [](Interp&, CallArgs& a) -> Value {
      const auto p = bind_args("raise_exception", a, {"message"});
      throw RenderError{p[0] ? to_str(*p[0]) : "", true};
    });
  if (name == "strftime_now")
    return native("strftime_now", [](Interp& in, CallArgs& a) -> Value {
      const auto p = bind_args("strftime_now", a, {"format"});
      if (!p[0]) fail("strftime_now() missing 1 required positional argument: 'format'");
      if (!p[0]->is_str()) fail("strftime() argument 1 must be str, not " + type_name(*p[0]));
      const DateTime now = in.options.clock ? in.options.clock() : local_now();
      return Value::string(format_datetime(now, p[0]->s()));
    });
  return std::nullopt;
}

}  // namespace kiln::jinja
