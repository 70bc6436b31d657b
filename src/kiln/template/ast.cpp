// AST utilities shared by the parser and the evaluator.
#include "kiln/template/ast.h"

namespace kiln::jinja {
namespace {

void scan_expr(const Expr* e, Stmt& m) {
  if (!e) return;
  if (e->kind == ExprKind::Name) {
    m.uses_varargs |= e->name == "varargs";
    m.uses_kwargs |= e->name == "kwargs";
    m.uses_caller |= e->name == "caller";
  }
  scan_expr(e->a.get(), m);
  scan_expr(e->b.get(), m);
  scan_expr(e->c.get(), m);
  scan_expr(e->dyn_args.get(), m);
  scan_expr(e->dyn_kwargs.get(), m);
  for (const auto& x : e->args) scan_expr(x.get(), m);
  for (const auto& kv : e->kwargs) scan_expr(kv.second.get(), m);
}

// Nested macros count too, as in jinja2's find_undeclared.
void scan_body(const Body& body, Stmt& m) {
  for (const auto& s : body) {
    for (const auto& x : s->exprs) scan_expr(x.get(), m);
    scan_expr(s->expr.get(), m);
    scan_expr(s->cond.get(), m);
    scan_expr(s->filter.get(), m);
    for (const auto& d : s->defaults) scan_expr(d.get(), m);
    for (const auto& [test, b] : s->branches) {
      scan_expr(test.get(), m);
      scan_body(b, m);
    }
    scan_body(s->body, m);
    scan_body(s->else_body, m);
  }
}

}  // namespace

void find_special_names(Stmt& macro) { scan_body(macro.body, macro); }

}  // namespace kiln::jinja
