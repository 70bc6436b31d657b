// Expression and statement evaluation (see interp.h). Attribute and item
// lookup follow jinja2's SandboxedEnvironment: Python attribute first, then
// item (or the reverse for `[]`), Undefined when neither exists, and an error
// only when an Undefined is used.
#include "kiln/template/interp.h"

#include <cmath>

#include "kiln/template/builtins.h"
#include "kiln/template/pystr.h"

namespace kiln::jinja {

const Value* Frame::find(const std::string& name) const {
  for (const auto& [k, v] : vars)
    if (k == name) return &v;
  return nullptr;
}

void Frame::set(const std::string& name, Value v) {
  for (auto& [k, x] : vars)
    if (k == name) {
      x = std::move(v);
      return;
    }
  vars.emplace_back(name, std::move(v));
}

std::string NativeFn::repr() const {
  return bound ? "<built-in method " + name + ">" : "<function " + name + ">";
}

Interp::Interp(const RenderOptions& o, RenderStats& st) : options(o), stats(st) {}

Interp::~Interp() {
  frame.reset();
  for (auto& w : objects_)
    if (auto o = w.lock()) o->release();
  for (auto& w : frames_)
    if (auto f = w.lock()) {
      f->vars.clear();
      f->parent.reset();
    }
}

std::shared_ptr<Frame> Interp::new_frame(std::shared_ptr<Frame> parent) {
  auto f = std::make_shared<Frame>(std::move(parent));
  if (frames_.size() >= frames_cap_) {
    // Most scopes (loop iterations) are gone already: drop their entries.
    std::erase_if(frames_, [](const std::weak_ptr<Frame>& w) { return w.expired(); });
    frames_cap_ = std::max<size_t>(64, frames_.size() * 2);
  }
  frames_.push_back(f);
  return f;
}

void Interp::track(const std::shared_ptr<Object>& o) {
  if (objects_.size() >= 64 && objects_.size() % 64 == 0)
    std::erase_if(objects_, [](const std::weak_ptr<Object>& w) { return w.expired(); });
  objects_.push_back(o);
}

std::string Interp::run(const Program& program, const Value& context) {
  frame = new_frame(nullptr);
  for (const auto& [k, v] : context.d().entries) frame->set(to_str(k), v);
  std::string result;
  out_ = &result;
  exec(program.body);
  out_ = nullptr;
  return result;
}

void Interp::check_size(size_t bytes) const {
  if (bytes > options.max_output_bytes)
    fail("rendered text exceeds the limit of " + std::to_string(options.max_output_bytes) +
         " bytes");
}

void Interp::step() {
  if (++stats.steps > options.max_steps)
    fail("template exceeded the limit of " + std::to_string(options.max_steps) +
         " evaluation steps (a runaway loop?)");
}

void Interp::write(std::string_view s) {
  check_size(out_->size() + s.size());
  out_->append(s);
}

std::string Interp::capture(const Body& body, Flow* flow) {
  std::string buf;
  std::string* saved = out_;
  out_ = &buf;
  const Flow f = exec(body);
  out_ = saved;
  if (flow) *flow = f;
  return buf;
}

// ---------------------------------------------------------------- lookup
Value Interp::lookup(const std::string& name) {
  for (const Frame* f = frame.get(); f; f = f->parent.get())
    if (const Value* v = f->find(name)) return *v;
  if (auto g = global(*this, name)) return *g;
  return Value::undefined("'" + name + "' is undefined");
}

void Interp::assign(const Target& t, const Value& v) {
  if (!t.attr.empty()) {
    const Value ns = lookup(t.name);
    if (!ns.is_obj() || !ns.o().is_namespace())
      fail("cannot assign attribute on non-namespace object");
    ns.o().set_attr(t.attr, v);
    return;
  }
  if (!t.is_tuple) {
    frame->set(t.name, v);
    return;
  }
  const List items = iterate(v);
  if (items.size() > t.items.size())
    fail("too many values to unpack (expected " + std::to_string(t.items.size()) + ")");
  if (items.size() < t.items.size())
    fail("not enough values to unpack (expected " + std::to_string(t.items.size()) + ", got " +
         std::to_string(items.size()) + ")");
  for (size_t k = 0; k < items.size(); ++k) assign(t.items[k], items[k]);
}

static std::string obj_desc(const Value& v) {
  if (v.is_none()) return "None";
  return type_name(v) + " object";
}

Value Interp::getattr(const Value& obj, const std::string& name) {
  switch (obj.kind) {
    case Kind::Undefined: undefined_error(obj);
    case Kind::Dict:
      if (auto m = method_attr(obj, name)) return *m;
      if (const Value* v = obj.d().find(name)) return *v;
      break;
    case Kind::Str:
    case Kind::Seq:
      if (auto m = method_attr(obj, name)) return *m;
      break;
    case Kind::Obj:
      if (auto v = obj.o().attr(*this, name)) return *v;
      break;
    case Kind::Bool:
    case Kind::Int:
      if (name == "real" || name == "numerator") return Value::integer(obj.i);
      if (name == "imag") return Value::integer(0);
      if (name == "denominator") return Value::integer(1);
      break;
    case Kind::Float:
      if (name == "real") return Value::number(obj.f);
      if (name == "imag") return Value::number(0.0);
      break;
    default: break;
  }
  return Value::undefined("'" + obj_desc(obj) + "' has no attribute '" + name + "'");
}

Value Interp::getitem(const Value& obj, const Value& key) {
  if (obj.is_undefined()) undefined_error(obj);
  if (key.is_int() && (obj.is_str() || (obj.is_seq() && (obj.seq == SeqKind::List ||
                                                          obj.seq == SeqKind::Tuple)))) {
    const int64_t n = obj.is_str() ? int64_t(pystr::length(obj.s())) : int64_t(obj.items().size());
    const int64_t k = key.i < 0 ? key.i + n : key.i;
    if (k >= 0 && k < n) {
      if (obj.is_seq()) return obj.items()[size_t(k)];
      if (pystr::is_ascii(obj.s())) return Value::string(obj.s().substr(size_t(k), 1));
      return Value::string(pystr::slice(obj.s(), k, k + 1, 1));
    }
  } else if (obj.is_dict() && hashable(key)) {
    if (const Value* v = obj.d().find(key)) return *v;
  }
  // jinja2 falls back to the attribute of that name.
  if (key.is_str()) {
    if (obj.is_obj()) {
      if (auto v = obj.o().attr(*this, key.s())) return *v;
    } else if (auto m = method_attr(obj, key.s())) {
      return *m;
    }
    return Value::undefined("'" + obj_desc(obj) + "' has no attribute '" + key.s() + "'");
  }
  return Value::undefined("'" + obj_desc(obj) + "' has no element " + repr(key));
}

Value Interp::eval_getitem(const Expr& e) {
  const Value obj = eval(*e.a);
  if (e.b->kind != ExprKind::Slice) return getitem(obj, eval(*e.b));
  const Expr& sl = *e.b;
  std::optional<int64_t> idx[3];
  bool type_error = false;
  const Expr* parts[3] = {sl.a.get(), sl.b.get(), sl.c.get()};
  for (int k = 0; k < 3; ++k) {
    if (!parts[k]) continue;
    const Value v = eval(*parts[k]);
    if (v.is_int()) idx[k] = v.i;
    else if (!v.is_none()) type_error = true;
  }
  if (obj.is_undefined()) undefined_error(obj);
  if (idx[2] && *idx[2] == 0) fail("slice step cannot be zero");
  if (!type_error) {
    if (obj.is_str()) return Value::string(pystr::slice(obj.s(), idx[0], idx[1], idx[2]));
    if (obj.is_seq() && (obj.seq == SeqKind::List || obj.seq == SeqKind::Tuple)) {
      const List& xs = obj.items();
      List out;
      for (int64_t k : pystr::slice_indices(int64_t(xs.size()), idx[0], idx[1], idx[2]))
        out.push_back(xs[size_t(k)]);
      return Value::list(std::move(out), obj.seq);
    }
  }
  return Value::undefined("'" + obj_desc(obj) + "' cannot be sliced");
}

Value Interp::call(const Value& fn, CallArgs& args) {
  if (fn.is_obj() && fn.o().is_callable()) return fn.o().call(*this, args);
  if (fn.is_undefined()) undefined_error(fn);
  fail("'" + type_name(fn) + "' object is not callable");
}

void Interp::eval_call_args(const Expr& e, CallArgs& args) {
  args.pos.reserve(e.args.size());
  for (const auto& a : e.args) args.pos.push_back(eval(*a));
  for (const auto& [k, v] : e.kwargs) args.kw.emplace_back(k, eval(*v));
  if (e.dyn_args)
    for (Value& v : iterate(eval(*e.dyn_args))) args.pos.push_back(std::move(v));
  if (e.dyn_kwargs) {
    const Value d = eval(*e.dyn_kwargs);
    if (!d.is_dict()) fail("argument after ** must be a mapping, not " + type_name(d));
    for (const auto& [k, v] : d.d().entries) {
      if (!k.is_str()) fail("keywords must be strings");
      args.kw.emplace_back(k.s(), v);
    }
  }
}

// ---------------------------------------------------------------- operators
bool contains(const Value& c, const Value& item) {
  switch (c.kind) {
    case Kind::Undefined: return false;
    case Kind::Str:
      if (!item.is_str())
        fail("'in <string>' requires string as left operand, not " + type_name(item));
      return c.s().find(item.s()) != std::string::npos;
    case Kind::Seq:
      for (const Value& x : c.items())
        if (equal(x, item)) return true;
      return false;
    case Kind::Dict:
      if (!hashable(item)) fail("unhashable type: '" + type_name(item) + "'");
      return c.d().find(item) != nullptr;
    default: fail("argument of type '" + type_name(c) + "' is not iterable");
  }
}

static const char* op_symbol(ExprKind op) {
  switch (op) {
    case ExprKind::Add: return "+";
    case ExprKind::Sub: return "-";
    case ExprKind::Mul: return "*";
    case ExprKind::Div: return "/";
    case ExprKind::FloorDiv: return "//";
    case ExprKind::Mod: return "%";
    case ExprKind::Pow: return "**";
    default: return "?";
  }
}

static Value repeat(const Value& seq, int64_t n, const Interp& in) {
  if (n <= 0) return seq.is_str() ? Value::string("") : Value::list({}, seq.seq);
  // Sizes are checked before multiplying so a huge count cannot wrap around.
  const size_t unit = seq.is_str() ? seq.s().size() : seq.items().size() * sizeof(Value);
  if (unit && uint64_t(n) > in.options.max_output_bytes / unit) in.check_size(SIZE_MAX);
  if (seq.is_str()) {
    std::string out;
    out.reserve(unit * size_t(n));
    for (int64_t k = 0; k < n; ++k) out += seq.s();
    return Value::string(std::move(out));
  }
  List out;
  for (int64_t k = 0; k < n; ++k) out.insert(out.end(), seq.items().begin(), seq.items().end());
  return Value::list(std::move(out), seq.seq);
}

static Value int_pow(int64_t base, int64_t exp) {
  int64_t r = 1;
  while (exp > 0) {
    if (exp & 1)
      if (__builtin_mul_overflow(r, base, &r)) fail("integer overflow (kiln's integers are 64-bit)");
    exp >>= 1;
    if (exp && __builtin_mul_overflow(base, base, &base))
      fail("integer overflow (kiln's integers are 64-bit)");
  }
  return Value::integer(r);
}

Value arith(ExprKind op, const Value& a, const Value& b, const Interp& in) {
  if (a.is_undefined()) undefined_error(a);
  if (b.is_undefined()) undefined_error(b);
  const bool ints = a.is_int() && b.is_int();
  const bool nums = a.is_number() && b.is_number();
  auto overflow = [] { fail("integer overflow (kiln's integers are 64-bit)"); };
  int64_t r = 0;
  switch (op) {
    case ExprKind::Add:
      if (ints) {
        if (__builtin_add_overflow(a.i, b.i, &r)) overflow();
        return Value::integer(r);
      }
      if (nums) return Value::number(a.as_double() + b.as_double());
      if (a.is_str() && b.is_str()) {
        in.check_size(a.s().size() + b.s().size());
        return Value::string(a.s() + b.s());
      }
      if (a.is_seq() && b.is_seq() && a.seq == b.seq &&
          (a.seq == SeqKind::List || a.seq == SeqKind::Tuple)) {
        in.check_size((a.items().size() + b.items().size()) * sizeof(Value));
        List out = a.items();
        out.insert(out.end(), b.items().begin(), b.items().end());
        return Value::list(std::move(out), a.seq);
      }
      break;
    case ExprKind::Sub:
      if (ints) {
        if (__builtin_sub_overflow(a.i, b.i, &r)) overflow();
        return Value::integer(r);
      }
      if (nums) return Value::number(a.as_double() - b.as_double());
      break;
    case ExprKind::Mul:
      if (ints) {
        if (__builtin_mul_overflow(a.i, b.i, &r)) overflow();
        return Value::integer(r);
      }
      if (nums) return Value::number(a.as_double() * b.as_double());
      if ((a.is_str() || a.is_seq()) && b.is_int() && (!a.is_seq() || a.seq == SeqKind::List || a.seq == SeqKind::Tuple))
        return repeat(a, b.i, in);
      if ((b.is_str() || b.is_seq()) && a.is_int() && (!b.is_seq() || b.seq == SeqKind::List || b.seq == SeqKind::Tuple))
        return repeat(b, a.i, in);
      break;
    case ExprKind::Div:
      if (nums) {
        if (b.as_double() == 0.0) fail("division by zero");
        return Value::number(a.as_double() / b.as_double());
      }
      break;
    case ExprKind::FloorDiv:
    case ExprKind::Mod:
      if (ints) {
        if (b.i == 0) fail(op == ExprKind::Mod ? "integer modulo by zero" : "integer division or modulo by zero");
        if (a.i == INT64_MIN && b.i == -1) {
          if (op == ExprKind::Mod) return Value::integer(0);
          overflow();
        }
        int64_t q = a.i / b.i, m = a.i % b.i;
        if (m != 0 && ((m < 0) != (b.i < 0))) {
          --q;
          m += b.i;
        }
        return Value::integer(op == ExprKind::Mod ? m : q);
      }
      if (nums) {
        // CPython's float_divmod.
        const double vx = a.as_double(), wx = b.as_double();
        if (wx == 0.0) fail("float modulo by zero");
        double mod = std::fmod(vx, wx);
        double div = (vx - mod) / wx;
        if (mod != 0.0) {
          if ((wx < 0) != (mod < 0)) {
            mod += wx;
            div -= 1.0;
          }
        } else {
          mod = std::copysign(0.0, wx);
        }
        if (op == ExprKind::Mod) return Value::number(mod);
        double floordiv;
        if (div != 0.0) {
          floordiv = std::floor(div);
          if (div - floordiv > 0.5) floordiv += 1.0;
        } else {
          floordiv = std::copysign(0.0, vx / wx);
        }
        return Value::number(floordiv);
      }
      if (op == ExprKind::Mod && a.is_str()) return Value::string(percent_format(a.s(), b));
      break;
    case ExprKind::Pow:
      if (ints) {
        if (b.i >= 0) return int_pow(a.i, b.i);
        if (a.i == 0) fail("0.0 cannot be raised to a negative power");
        return Value::number(std::pow(double(a.i), double(b.i)));
      }
      if (nums) {
        const double x = a.as_double(), y = b.as_double();
        if (x == 0.0 && y < 0) fail("0.0 cannot be raised to a negative power");
        if (x < 0 && y != std::floor(y)) fail("a negative number to a fractional power is complex; kiln does not support complex numbers");
        return Value::number(std::pow(x, y));
      }
      break;
    default: break;
  }
  fail(std::string("unsupported operand type(s) for ") + op_symbol(op) + ": '" + type_name(a) +
       "' and '" + type_name(b) + "'");
}

static bool compare(CmpOp op, const Value& a, const Value& b) {
  switch (op) {
    case CmpOp::Eq: return equal(a, b);
    case CmpOp::Ne: return !equal(a, b);
    case CmpOp::Lt: return less(a, b);
    case CmpOp::LtEq: return less(a, b) || equal(a, b);
    case CmpOp::Gt: return less(b, a);
    case CmpOp::GtEq: return less(b, a) || equal(a, b);
    case CmpOp::In: return contains(b, a);
    case CmpOp::NotIn: return !contains(b, a);
  }
  return false;
}

Value Interp::eval_compare(const Expr& e) {
  Value left = eval(*e.a);
  for (size_t k = 0; k < e.ops.size(); ++k) {
    Value right = eval(*e.args[k]);
    if (!compare(e.ops[k], left, right)) return Value::boolean(false);
    left = std::move(right);
  }
  return Value::boolean(true);
}

Value Interp::eval(const Expr& e) {
  step();
  line_ = e.line;
  switch (e.kind) {
    case ExprKind::Const: return e.value;
    case ExprKind::Name: return lookup(e.name);
    case ExprKind::List:
    case ExprKind::Tuple: {
      List xs;
      xs.reserve(e.args.size());
      for (const auto& a : e.args) xs.push_back(eval(*a));
      return Value::list(std::move(xs), e.kind == ExprKind::Tuple ? SeqKind::Tuple : SeqKind::List);
    }
    case ExprKind::Dict: {
      DictData d;
      for (size_t k = 0; k + 1 < e.args.size(); k += 2) {
        Value key = eval(*e.args[k]);
        if (!hashable(key)) fail("unhashable type: '" + type_name(key) + "'");
        d.set(std::move(key), eval(*e.args[k + 1]));
      }
      return Value::dict(std::move(d));
    }
    case ExprKind::GetAttr: return getattr(eval(*e.a), e.name);
    case ExprKind::GetItem: return eval_getitem(e);
    case ExprKind::Slice: fail("a slice is only valid inside []");
    case ExprKind::Call: {
      const Value fn = eval(*e.a);
      CallArgs args;
      eval_call_args(e, args);
      return call(fn, args);
    }
    case ExprKind::Filter: {
      const Value subject = eval(*e.a);
      CallArgs args;
      eval_call_args(e, args);
      ++stats.filter_calls;
      return apply_filter(*this, e.fn, e.name, subject, args);
    }
    case ExprKind::Test: {
      const Value subject = eval(*e.a);
      CallArgs args;
      eval_call_args(e, args);
      return Value::boolean(apply_test(*this, e.fn, e.name, subject, args));
    }
    case ExprKind::Neg:
    case ExprKind::Pos: {
      const Value v = eval(*e.a);
      if (v.is_undefined()) undefined_error(v);
      const bool neg = e.kind == ExprKind::Neg;
      if (v.is_int()) {
        if (neg && v.i == INT64_MIN) fail("integer overflow (kiln's integers are 64-bit)");
        return Value::integer(neg ? -v.i : v.i);
      }
      if (v.kind == Kind::Float) return Value::number(neg ? -v.f : v.f);
      fail(std::string("bad operand type for unary ") + (neg ? "-" : "+") + ": '" + type_name(v) + "'");
    }
    case ExprKind::Not: return Value::boolean(!truthy(eval(*e.a)));
    case ExprKind::Add:
    case ExprKind::Sub:
    case ExprKind::Mul:
    case ExprKind::Div:
    case ExprKind::FloorDiv:
    case ExprKind::Mod:
    case ExprKind::Pow: {
      const Value a = eval(*e.a);
      const Value b = eval(*e.b);
      line_ = e.line;
      return arith(e.kind, a, b, *this);
    }
    case ExprKind::And: {
      Value l = eval(*e.a);
      return truthy(l) ? eval(*e.b) : l;
    }
    case ExprKind::Or: {
      Value l = eval(*e.a);
      return truthy(l) ? l : eval(*e.b);
    }
    case ExprKind::Concat: {
      std::string s;
      for (const auto& a : e.args) {
        s += to_str(eval(*a));
        check_size(s.size());
      }
      return Value::string(std::move(s));
    }
    case ExprKind::Compare: return eval_compare(e);
    case ExprKind::CondExpr:
      if (truthy(eval(*e.a))) return eval(*e.b);
      if (e.c) return eval(*e.c);
      return Value::undefined("the inline if-expression on line " + std::to_string(e.line) +
                              " evaluated to false and no else section was defined.");
  }
  fail("internal error: unknown expression");
}

// ---------------------------------------------------------------- statements
Flow Interp::exec(const Body& body) {
  for (const auto& s : body) {
    const Flow f = exec_stmt(*s);
    if (f != Flow::Normal) return f;
  }
  return Flow::Normal;
}

// Applies a filter chain whose innermost subject is `input` (filter blocks).
static Value apply_chain(Interp& in, const Expr& f, const Value& input) {
  const Value subject = f.a ? apply_chain(in, *f.a, input) : input;
  CallArgs args;
  in.eval_call_args(f, args);
  ++in.stats.filter_calls;
  return apply_filter(in, f.fn, f.name, subject, args);
}

Flow Interp::exec_stmt(const Stmt& s) {
  step();
  line_ = s.line;
  switch (s.kind) {
    case StmtKind::Data: write(s.text); return Flow::Normal;
    case StmtKind::Output:
      for (const auto& e : s.exprs) write(to_str(eval(*e)));
      return Flow::Normal;
    case StmtKind::If:
      for (const auto& [test, body] : s.branches)
        if (truthy(eval(*test))) return exec(body);
      return exec(s.else_body);
    case StmtKind::For: return exec_for(s);
    case StmtKind::Set: assign(s.target, eval(*s.expr)); return Flow::Normal;
    case StmtKind::SetBlock:
    case StmtKind::FilterBlock: {
      const auto saved = frame;
      frame = new_frame(saved);
      Flow flow;
      Value v = Value::string(capture(s.body, &flow));
      frame = saved;
      if (s.filter) v = apply_chain(*this, *s.filter, v);
      if (s.kind == StmtKind::SetBlock) assign(s.target, v);
      else write(to_str(v));
      return flow;
    }
    case StmtKind::Macro: frame->set(s.name, make_macro(s)); return Flow::Normal;
    case StmtKind::CallBlock: {
      const Expr& c = *s.expr;
      const Value fn = eval(*c.a);
      CallArgs args;
      eval_call_args(c, args);
      args.kw.emplace_back("caller", make_macro(s));
      write(to_str(call(fn, args)));
      return Flow::Normal;
    }
    case StmtKind::With: {
      std::vector<Value> vals;
      for (const auto& e : s.exprs) vals.push_back(eval(*e));
      const auto saved = frame;
      frame = new_frame(saved);
      for (size_t k = 0; k < vals.size(); ++k) assign(s.targets[k], vals[k]);
      const Flow f = exec(s.body);
      frame = saved;
      return f;
    }
    case StmtKind::Scope: {
      const auto saved = frame;
      frame = new_frame(saved);
      exec(s.body);
      frame = saved;
      return Flow::Normal;
    }
    case StmtKind::Block: {
      // Blocks see the template's top-level names, not enclosing loops (unless scoped).
      const auto saved = frame;
      std::shared_ptr<Frame> root = frame;
      while (!s.recursive && root->parent) root = root->parent;
      frame = new_frame(root);
      exec(s.body);
      frame = saved;
      return Flow::Normal;
    }
    case StmtKind::Break: return Flow::Break;
    case StmtKind::Continue: return Flow::Continue;
  }
  return Flow::Normal;
}

}  // namespace kiln::jinja
