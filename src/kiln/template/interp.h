// The evaluator: walks a Program with jinja2's runtime semantics (scoping,
// Undefined, the sandbox's attribute and item lookup), writing output into a
// string. Internal failures throw RenderError; template.cpp turns them into
// kiln::Result errors at the API boundary.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kiln/template/ast.h"
#include "kiln/template/template.h"
#include "kiln/template/value.h"

namespace kiln::jinja {

// One variable scope. jinja2 opens a scope per loop iteration, macro call,
// call/filter/set/with block; `if` does not. Reads fall back to the parent;
// `set` writes the innermost scope.
struct Frame {
  std::shared_ptr<Frame> parent;
  std::vector<std::pair<std::string, Value>> vars;

  explicit Frame(std::shared_ptr<Frame> p = nullptr) : parent(std::move(p)) {}
  const Value* find(const std::string& name) const;
  void set(const std::string& name, Value v);
};

// A builtin callable (global function, bound method, loop.cycle, ...).
struct NativeFn : Object {
  using Fn = std::function<Value(Interp&, CallArgs&)>;
  std::string name;
  Fn fn;
  bool bound = false;  // a method: prints as "<built-in method ...>"
  NativeFn(std::string n, Fn f, bool b = false) : name(std::move(n)), fn(std::move(f)), bound(b) {}
  std::string repr() const override;
  std::string type_name() const override { return bound ? "builtin_function_or_method" : "function"; }
  bool is_callable() const override { return true; }
  Value call(Interp& in, CallArgs& args) override { return fn(in, args); }
};

enum class Flow { Normal, Break, Continue };

class Interp {
 public:
  Interp(const RenderOptions& options, RenderStats& stats);
  ~Interp();  // breaks the reference cycles a render may have built
  Interp(const Interp&) = delete;
  Interp& operator=(const Interp&) = delete;

  // Renders `program` with `context` (a dict) as the top-level variables.
  std::string run(const Program& program, const Value& context);

  Value eval(const Expr& e);
  Flow exec(const Body& body);
  // Renders `body` into a fresh string in the current scope.
  std::string capture(const Body& body, Flow* flow = nullptr);

  Value lookup(const std::string& name);
  void assign(const Target& t, const Value& v);
  Value getattr(const Value& obj, const std::string& name);
  Value getitem(const Value& obj, const Value& key);
  Value call(const Value& fn, CallArgs& args);
  void eval_call_args(const Expr& e, CallArgs& args);

  // Every scope and value-holding object is made through these, so the
  // destructor can release them all.
  std::shared_ptr<Frame> new_frame(std::shared_ptr<Frame> parent);
  void track(const std::shared_ptr<Object>& o);

  // Fails if a string of `bytes` would exceed the output cap.
  void check_size(size_t bytes) const;
  void step();

  const RenderOptions& options;
  RenderStats& stats;
  std::shared_ptr<Frame> frame;
  int call_depth = 0;

 private:
  std::string* out_ = nullptr;
  uint32_t line_ = 0;
  std::vector<std::weak_ptr<Frame>> frames_;
  std::vector<std::weak_ptr<Object>> objects_;
  size_t frames_cap_ = 64;

  void write(std::string_view s);
  Flow exec_stmt(const Stmt& s);
  Flow exec_for(const Stmt& s);
  Value eval_binary(const Expr& e);
  Value eval_compare(const Expr& e);
  Value eval_getitem(const Expr& e);
  Value make_macro(const Stmt& s);

 public:
  // Runs a for loop over `iterable`; used again by `loop(...)` in recursive loops.
  void run_loop(const Stmt& s, const Value& iterable, int depth0);
  std::string capture_loop(const Stmt& s, const Value& iterable, int depth0);
  uint32_t line() const { return line_; }
};

// Arithmetic with Python semantics (int overflow fails instead of growing).
Value arith(ExprKind op, const Value& a, const Value& b, const Interp& in);
bool contains(const Value& container, const Value& item);

}  // namespace kiln::jinja
