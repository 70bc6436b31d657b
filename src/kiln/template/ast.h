// The parsed form of a template: expression and statement nodes, shaped after
// jinja2's own node classes so the evaluator can follow its semantics.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kiln/template/value.h"

namespace kiln::jinja {

enum class ExprKind : uint8_t {
  Const, Name, List, Tuple, Dict, GetAttr, GetItem, Slice, Call, Filter, Test,
  Neg, Pos, Not, Add, Sub, Mul, Div, FloorDiv, Mod, Pow, And, Or, Concat, Compare, CondExpr,
};
enum class CmpOp : uint8_t { Eq, Ne, Lt, LtEq, Gt, GtEq, In, NotIn };

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  ExprKind kind = ExprKind::Const;
  uint16_t depth = 1;  // height of this subtree (bounded by the parser)
  uint32_t line = 0, col = 0;
  Value value;       // Const
  std::string name;  // Name; GetAttr attribute; Filter/Test name
  int fn = -1;       // Filter/Test: resolved builtin id (see builtins.h)
  // Operands: GetAttr (a); GetItem (a[b]); Slice (a:b:c, each may be null);
  // Call (a = callee); Filter/Test (a = subject, null in filter blocks);
  // unary (a); binary/And/Or (a, b); Compare (a, then args with ops);
  // CondExpr (b if a else c; c may be null).
  ExprPtr a, b, c;
  std::vector<ExprPtr> args;  // List/Tuple/Concat items; Dict key,value,...; call positionals
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  ExprPtr dyn_args, dyn_kwargs;  // *args, **kwargs
  std::vector<CmpOp> ops;
};

// An assignment target: a name, `ns.attr`, or a (nested) tuple of targets.
struct Target {
  std::string name;
  std::string attr;  // non-empty: namespace attribute assignment
  bool is_tuple = false;
  std::vector<Target> items;
};

enum class StmtKind : uint8_t {
  Data, Output, If, For, Set, SetBlock, Macro, CallBlock, FilterBlock, With, Break, Continue,
  Scope,  // transformers' {% generation %}: body in its own scope
  Block,  // {% block %}: body in a scope under the template's top level
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct Stmt {
  StmtKind kind = StmtKind::Data;
  uint32_t line = 0, col = 0;
  std::string text;            // Data
  std::vector<ExprPtr> exprs;  // Output items; With values
  ExprPtr expr;                // Set value; For iterable; CallBlock call
  ExprPtr cond;                // For `if` filter
  ExprPtr filter;              // SetBlock / FilterBlock filter chain (innermost subject null)
  Target target;               // Set, SetBlock, For
  std::vector<Target> targets;  // With
  Body body, else_body;
  std::vector<std::pair<ExprPtr, Body>> branches;  // If / elif chain; else in else_body
  bool recursive = false;
  // Macro and CallBlock signature.
  std::string name;
  std::vector<std::string> params;
  std::vector<ExprPtr> defaults;  // align with the last params
  bool uses_varargs = false, uses_kwargs = false, uses_caller = false;
};

struct Program {
  Body body;
};

// Sets a macro's (or call block's) uses_varargs/uses_kwargs/uses_caller from
// the names its body reads: jinja2 accepts extra arguments only then.
void find_special_names(Stmt& macro);

}  // namespace kiln::jinja
