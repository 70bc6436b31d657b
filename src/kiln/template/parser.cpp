// Recursive-descent parser for jinja templates. Each parse_* function matches
// the jinja2 parser function of the same name, so precedence quirks carry
// over (filters bind tighter than unary minus's operand: `-x|abs` is
// abs(-x); `**` is left-associative; `not` binds looser than `is`).
#include "kiln/template/parser.h"

#include <initializer_list>

#include "kiln/template/builtins.h"

namespace kiln::jinja {
namespace {

constexpr int kMaxDepth = 200;       // nested statements / parenthesized expressions
constexpr int kMaxExprDepth = 400;   // height of one expression tree (`a+b+c+...` chains)

class Parser {
 public:
  explicit Parser(std::vector<Token> toks) : t_(std::move(toks)) {}

  Program parse() {
    Program p;
    p.body = subparse({});
    return p;
  }

 private:
  std::vector<Token> t_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
  std::vector<std::string> tag_stack_;

  struct DepthGuard {
    Parser& p;
    explicit DepthGuard(Parser& pp) : p(pp) {
      if (++p.depth_ > kMaxDepth) p.fail("template nests too deeply (kiln's limit is 200 levels)");
    }
    ~DepthGuard() { --p.depth_; }
  };

  const Token& cur() const { return t_[pos_]; }
  const Token& look() const { return t_[std::min(pos_ + 1, t_.size() - 1)]; }
  const Token& next() {
    const Token& tok = t_[pos_];
    if (pos_ + 1 < t_.size()) ++pos_;
    return tok;
  }
  bool is(Tok type) const { return cur().type == type; }
  bool is_name(const char* n) const { return cur().type == Tok::Name && cur().text == n; }
  bool skip_if(Tok type) {
    if (!is(type)) return false;
    next();
    return true;
  }
  bool skip_name(const char* n) {
    if (!is_name(n)) return false;
    next();
    return true;
  }

  [[noreturn]] void fail(const std::string& msg) const { fail_at(msg, cur()); }
  [[noreturn]] static void fail_at(const std::string& msg, const Token& at) {
    throw SyntaxError{msg, at.line, at.col};
  }

  static std::string describe(const Token& tok) {
    if (tok.type == Tok::Name) return "'" + tok.text + "'";
    return tok_name(tok.type);
  }

  const Token& expect(Tok type) {
    if (!is(type)) {
      if (is(Tok::Eof)) fail(std::string("unexpected end of template, expected ") + tok_name(type));
      fail(std::string("expected token ") + tok_name(type) + ", got " + describe(cur()));
    }
    return next();
  }
  const Token& expect_name(const char* n) {
    if (!is_name(n)) fail(std::string("expected token '") + n + "', got " + describe(cur()));
    return next();
  }

  // Records the height of a composite node once its children are attached;
  // refuses trees that would make evaluation (or destruction) recurse too deep.
  Expr& seal(Expr& e) {
    int d = 0;
    auto see = [&](const ExprPtr& c) {
      if (c) d = std::max(d, int(c->depth));
    };
    see(e.a);
    see(e.b);
    see(e.c);
    see(e.dyn_args);
    see(e.dyn_kwargs);
    for (const auto& x : e.args) see(x);
    for (const auto& kv : e.kwargs) see(kv.second);
    if (d + 1 > kMaxExprDepth)
      throw SyntaxError{"expression nests too deeply (kiln's limit is 400 levels)", e.line, e.col};
    e.depth = uint16_t(d + 1);
    return e;
  }
  ExprPtr sealed(ExprPtr e) {
    seal(*e);
    return e;
  }

  ExprPtr node(ExprKind k, const Token& at) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    e->line = at.line;
    e->col = at.col;
    return e;
  }
  StmtPtr stmt(StmtKind k, const Token& at) {
    auto s = std::make_unique<Stmt>();
    s->kind = k;
    s->line = at.line;
    s->col = at.col;
    return s;
  }

  // ------------------------------------------------------------ statements
  Body subparse(std::initializer_list<const char*> end_tokens) {
    Body body;
    while (!is(Tok::Eof)) {
      if (is(Tok::Data)) {
        auto d = stmt(StmtKind::Data, cur());
        d->text = next().text;
        body.push_back(std::move(d));
      } else if (is(Tok::VarBegin)) {
        const Token& at = next();
        auto o = stmt(StmtKind::Output, at);
        o->exprs.push_back(parse_tuple(false, true, {}, false));
        expect(Tok::VarEnd);
        body.push_back(std::move(o));
      } else if (is(Tok::BlockBegin)) {
        next();
        for (const char* e : end_tokens)
          if (is_name(e)) return body;
        body.push_back(parse_statement());
        expect(Tok::BlockEnd);
      } else {
        fail("internal parsing error");
      }
    }
    return body;
  }

  Body parse_statements(std::initializer_list<const char*> end_tokens, bool drop_needle) {
    skip_if(Tok::Colon);
    expect(Tok::BlockEnd);
    Body body = subparse(end_tokens);
    if (is(Tok::Eof)) {
      std::string names;
      for (const char* e : end_tokens) names += std::string(names.empty() ? "" : " or ") + "'" + e + "'";
      fail("unexpected end of template; jinja was looking for the following tags: " + names +
           (tag_stack_.empty() ? "" : ". The innermost block that needs to be closed is '" +
                                          tag_stack_.back() + "'"));
    }
    if (drop_needle) next();
    return body;
  }

  StmtPtr parse_statement() {
    DepthGuard g(*this);
    const Token& tok = cur();
    if (tok.type != Tok::Name) fail("tag name expected");
    const std::string& n = tok.text;
    tag_stack_.push_back(n);
    StmtPtr s;
    if (n == "for") s = parse_for();
    else if (n == "if") s = parse_if();
    else if (n == "set") s = parse_set();
    else if (n == "macro") s = parse_macro();
    else if (n == "call") s = parse_call_block();
    else if (n == "filter") s = parse_filter_block();
    else if (n == "with") s = parse_with();
    else if (n == "print") s = parse_print();
    else if (n == "generation") s = parse_generation();
    else if (n == "break" || n == "continue") {
      if (loop_depth_ == 0) fail("'" + n + "' outside of a loop");
      s = stmt(n == "break" ? StmtKind::Break : StmtKind::Continue, next());
    } else if (n == "block") {
      s = parse_block();
    } else if (n == "extends" || n == "include" || n == "import" || n == "from" ||
               n == "autoescape") {
      fail("the '" + n + "' tag is not supported by kiln (chat templates are rendered without a loader)");
    } else {
      tag_stack_.pop_back();
      fail("Encountered unknown tag '" + n + "'.");
    }
    tag_stack_.pop_back();
    return s;
  }

  StmtPtr parse_for() {
    auto s = stmt(StmtKind::For, expect_name("for"));
    const Token& target_at = cur();
    s->target = to_target(parse_tuple(true, true, {"in"}, false), true);
    if (names_loop(s->target)) fail_at("Can't assign to special loop variable in for-loop target", target_at);
    expect_name("in");
    s->expr = parse_tuple(false, false, {"recursive"}, false);
    if (skip_name("if")) s->cond = parse_expression(true);
    s->recursive = skip_name("recursive");
    ++loop_depth_;
    s->body = parse_statements({"endfor", "else"}, false);
    --loop_depth_;
    if (next().text != "endfor") s->else_body = parse_statements({"endfor"}, true);
    return s;
  }

  StmtPtr parse_if() {
    auto s = stmt(StmtKind::If, expect_name("if"));
    while (true) {
      ExprPtr test = parse_tuple(false, false, {}, false);
      Body body = parse_statements({"elif", "else", "endif"}, false);
      s->branches.emplace_back(std::move(test), std::move(body));
      const Token& tok = next();
      if (tok.text == "elif") continue;
      if (tok.text == "else") s->else_body = parse_statements({"endif"}, true);
      break;
    }
    return s;
  }

  StmtPtr parse_set() {
    const Token& at = next();
    Target target;
    if (is(Tok::Name) && look().type == Tok::Dot) {
      target.name = next().text;
      next();
      target.attr = expect(Tok::Name).text;
    } else {
      target = to_target(parse_tuple(true, true, {}, false), true);
    }
    if (skip_if(Tok::Assign)) {
      auto s = stmt(StmtKind::Set, at);
      s->target = std::move(target);
      s->expr = parse_tuple(false, true, {}, false);
      return s;
    }
    auto s = stmt(StmtKind::SetBlock, at);
    s->target = std::move(target);
    s->filter = parse_filter(nullptr, false);
    s->body = parse_statements({"endset"}, true);
    return s;
  }

  void parse_signature(Stmt& s) {
    expect(Tok::LParen);
    while (!is(Tok::RParen)) {
      if (!s.params.empty()) expect(Tok::Comma);
      const Token& name = expect(Tok::Name);
      check_assignable(name);
      s.params.push_back(name.text);
      if (skip_if(Tok::Assign)) {
        s.defaults.push_back(parse_expression(true));
      } else if (!s.defaults.empty()) {
        fail("non-default argument follows default argument");
      }
    }
    expect(Tok::RParen);
  }

  // Macro and call bodies are new functions: loops outside do not reach in.
  Body parse_function_body(const char* end) {
    const int saved = loop_depth_;
    loop_depth_ = 0;
    Body b = parse_statements({end}, true);
    loop_depth_ = saved;
    return b;
  }

  StmtPtr parse_macro() {
    auto s = stmt(StmtKind::Macro, next());
    const Token& name = expect(Tok::Name);
    check_assignable(name);
    s->name = name.text;
    parse_signature(*s);
    s->body = parse_function_body("endmacro");
    find_special_names(*s);
    return s;
  }

  StmtPtr parse_call_block() {
    auto s = stmt(StmtKind::CallBlock, next());
    if (is(Tok::LParen)) parse_signature(*s);
    s->expr = parse_expression(true);
    if (s->expr->kind != ExprKind::Call) fail_at("expected call", t_[pos_ - 1]);
    s->name = "caller";
    s->body = parse_function_body("endcall");
    find_special_names(*s);
    return s;
  }

  StmtPtr parse_filter_block() {
    auto s = stmt(StmtKind::FilterBlock, next());
    s->filter = parse_filter(nullptr, true);
    s->body = parse_statements({"endfilter"}, true);
    return s;
  }

  StmtPtr parse_with() {
    auto s = stmt(StmtKind::With, next());
    while (!is(Tok::BlockEnd)) {
      if (!s->targets.empty()) expect(Tok::Comma);
      s->targets.push_back(to_target(parse_tuple(true, true, {}, false), true));
      expect(Tok::Assign);
      s->exprs.push_back(parse_expression(true));
    }
    s->body = parse_statements({"endwith"}, true);
    return s;
  }

  StmtPtr parse_print() {
    auto s = stmt(StmtKind::Output, next());
    while (!is(Tok::BlockEnd)) {
      if (!s->exprs.empty()) expect(Tok::Comma);
      s->exprs.push_back(parse_expression(true));
    }
    return s;
  }

  // {% block name [scoped] %}: rendered in place (no inheritance without a loader).
  StmtPtr parse_block() {
    auto s = stmt(StmtKind::Block, next());
    s->name = expect(Tok::Name).text;
    s->recursive = skip_name("scoped");  // `recursive` doubles as the scoped flag
    skip_name("required");
    s->body = parse_function_body("endblock");
    if (is(Tok::Name) && cur().text != s->name) fail("mismatched name of endblock");
    skip_if(Tok::Name);
    return s;
  }

  StmtPtr parse_generation() {
    auto s = stmt(StmtKind::Scope, next());
    s->body = parse_function_body("endgeneration");
    return s;
  }

  static bool names_loop(const Target& t) {
    if (t.name == "loop") return true;
    for (const Target& x : t.items)
      if (names_loop(x)) return true;
    return false;
  }

  static void check_assignable(const Token& name) {
    static const char* kConsts[] = {"true", "false", "none", "True", "False", "None"};
    for (const char* c : kConsts)
      if (name.text == c) fail_at("can't assign to 'const'", name);
  }

  Target to_target(ExprPtr e, bool allow_tuple) {
    Target t;
    if (e->kind == ExprKind::Name) {
      t.name = e->name;
      return t;
    }
    if (e->kind == ExprKind::Tuple && allow_tuple) {
      t.is_tuple = true;
      for (auto& item : e->args) t.items.push_back(to_target(std::move(item), true));
      return t;
    }
    throw SyntaxError{"can't assign to '" + std::string(e->kind == ExprKind::Const ? "const" : "expression") + "'", e->line, e->col};
  }

  // ------------------------------------------------------------ expressions
  ExprPtr parse_expression(bool with_condexpr) {
    return with_condexpr ? parse_condexpr() : parse_or();
  }

  ExprPtr parse_condexpr() {
    DepthGuard g(*this);
    ExprPtr expr1 = parse_or();
    while (is_name("if")) {
      const Token& at = next();
      auto e = node(ExprKind::CondExpr, at);
      e->a = parse_or();
      if (skip_name("else")) e->c = parse_condexpr();
      e->b = std::move(expr1);
      expr1 = sealed(std::move(e));
    }
    return expr1;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (is_name("or")) {
      auto e = node(ExprKind::Or, next());
      e->a = std::move(left);
      e->b = parse_and();
      left = sealed(std::move(e));
    }
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (is_name("and")) {
      auto e = node(ExprKind::And, next());
      e->a = std::move(left);
      e->b = parse_not();
      left = sealed(std::move(e));
    }
    return left;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      DepthGuard g(*this);
      auto e = node(ExprKind::Not, next());
      e->a = parse_not();
      return sealed(std::move(e));
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    const Token& at = cur();
    ExprPtr expr = parse_math1();
    std::vector<CmpOp> ops;
    std::vector<ExprPtr> operands;
    while (true) {
      CmpOp op;
      switch (cur().type) {
        case Tok::Eq: op = CmpOp::Eq; break;
        case Tok::Ne: op = CmpOp::Ne; break;
        case Tok::Lt: op = CmpOp::Lt; break;
        case Tok::LtEq: op = CmpOp::LtEq; break;
        case Tok::Gt: op = CmpOp::Gt; break;
        case Tok::GtEq: op = CmpOp::GtEq; break;
        default:
          if (is_name("in")) {
            op = CmpOp::In;
          } else if (is_name("not") && look().type == Tok::Name && look().text == "in") {
            next();
            op = CmpOp::NotIn;
          } else {
            goto done;
          }
      }
      next();
      ops.push_back(op);
      operands.push_back(parse_math1());
    }
  done:
    if (ops.empty()) return expr;
    auto e = node(ExprKind::Compare, at);
    e->a = std::move(expr);
    e->ops = std::move(ops);
    e->args = std::move(operands);
    return sealed(std::move(e));
  }

  ExprPtr binary(ExprKind k, const Token& at, ExprPtr l, ExprPtr r) {
    auto e = node(k, at);
    e->a = std::move(l);
    e->b = std::move(r);
    return sealed(std::move(e));
  }

  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (is(Tok::Add) || is(Tok::Sub)) {
      const Token& at = next();
      left = binary(at.type == Tok::Add ? ExprKind::Add : ExprKind::Sub, at, std::move(left),
                    parse_concat());
    }
    return left;
  }

  ExprPtr parse_concat() {
    const Token& at = cur();
    ExprPtr first = parse_math2();
    if (!is(Tok::Tilde)) return first;
    auto e = node(ExprKind::Concat, at);
    e->args.push_back(std::move(first));
    while (skip_if(Tok::Tilde)) e->args.push_back(parse_math2());
    return sealed(std::move(e));
  }

  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    while (is(Tok::Mul) || is(Tok::Div) || is(Tok::FloorDiv) || is(Tok::Mod)) {
      const Token& at = next();
      const ExprKind k = at.type == Tok::Mul ? ExprKind::Mul
                         : at.type == Tok::Div ? ExprKind::Div
                         : at.type == Tok::FloorDiv ? ExprKind::FloorDiv
                                                    : ExprKind::Mod;
      left = binary(k, at, std::move(left), parse_pow());
    }
    return left;
  }

  ExprPtr parse_pow() {
    ExprPtr left = parse_unary(true);
    while (is(Tok::Pow)) {
      const Token& at = next();
      left = binary(ExprKind::Pow, at, std::move(left), parse_unary(true));
    }
    return left;
  }

  ExprPtr parse_unary(bool with_filter) {
    DepthGuard g(*this);
    ExprPtr n;
    if (is(Tok::Sub) || is(Tok::Add)) {
      const Token& at = next();
      n = node(at.type == Tok::Sub ? ExprKind::Neg : ExprKind::Pos, at);
      n->a = parse_unary(false);
      seal(*n);
    } else {
      n = parse_primary();
    }
    n = parse_postfix(std::move(n));
    if (with_filter) n = parse_filter_expr(std::move(n));
    return n;
  }

  ExprPtr parse_primary() {
    DepthGuard g(*this);
    const Token& tok = cur();
    ExprPtr n;
    switch (tok.type) {
      case Tok::Name:
        n = node(ExprKind::Const, tok);
        if (tok.text == "true" || tok.text == "True") n->value = Value::boolean(true);
        else if (tok.text == "false" || tok.text == "False") n->value = Value::boolean(false);
        else if (tok.text == "none" || tok.text == "None") n->value = Value::none();
        else {
          n->kind = ExprKind::Name;
          n->name = tok.text;
        }
        next();
        return n;
      case Tok::String: {
        n = node(ExprKind::Const, tok);
        std::string s = next().text;
        while (is(Tok::String)) s += next().text;  // adjacent literals concatenate
        n->value = Value::string(std::move(s));
        return n;
      }
      case Tok::Int:
        n = node(ExprKind::Const, tok);
        n->value = Value::integer(next().ival);
        return n;
      case Tok::Float:
        n = node(ExprKind::Const, tok);
        n->value = Value::number(next().fval);
        return n;
      case Tok::LParen:
        next();
        n = parse_tuple(false, true, {}, true);
        expect(Tok::RParen);
        return n;
      case Tok::LBracket: return parse_list();
      case Tok::LBrace: return parse_dict();
      default:
        if (tok.type == Tok::Eof) fail("unexpected end of template");
        fail("unexpected " + describe(tok));
    }
  }

  // jinja2 3.1 passes its extra end rules to Token.test_any as one tuple, so
  // they never match; only }} %} and ) end a tuple (`for a, in x` is an error).
  bool is_tuple_end(std::initializer_list<const char*>) const {
    return is(Tok::VarEnd) || is(Tok::BlockEnd) || is(Tok::RParen);
  }

  ExprPtr parse_tuple(bool simplified, bool with_condexpr,
                      std::initializer_list<const char*> extra_end, bool explicit_parens) {
    const Token& at = cur();
    std::vector<ExprPtr> args;
    bool is_tuple = false;
    while (true) {
      if (!args.empty()) expect(Tok::Comma);
      if (is_tuple_end(extra_end)) break;
      args.push_back(simplified ? parse_primary() : parse_expression(with_condexpr));
      if (is(Tok::Comma)) is_tuple = true;
      else break;
    }
    if (!is_tuple) {
      if (!args.empty()) return std::move(args[0]);
      if (!explicit_parens) fail("Expected an expression, got " + describe(cur()));
    }
    auto e = node(ExprKind::Tuple, at);
    e->args = std::move(args);
    return sealed(std::move(e));
  }

  ExprPtr parse_list() {
    auto e = node(ExprKind::List, expect(Tok::LBracket));
    while (!is(Tok::RBracket)) {
      if (!e->args.empty()) expect(Tok::Comma);
      if (is(Tok::RBracket)) break;
      e->args.push_back(parse_expression(true));
    }
    expect(Tok::RBracket);
    return sealed(std::move(e));
  }

  ExprPtr parse_dict() {
    auto e = node(ExprKind::Dict, expect(Tok::LBrace));
    while (!is(Tok::RBrace)) {
      if (!e->args.empty()) expect(Tok::Comma);
      if (is(Tok::RBrace)) break;
      e->args.push_back(parse_expression(true));
      expect(Tok::Colon);
      e->args.push_back(parse_expression(true));
    }
    expect(Tok::RBrace);
    return sealed(std::move(e));
  }

  ExprPtr parse_postfix(ExprPtr n) {
    while (true) {
      if (is(Tok::Dot) || is(Tok::LBracket)) n = parse_subscript(std::move(n));
      else if (is(Tok::LParen)) n = parse_call(std::move(n));
      else return n;
    }
  }

  ExprPtr parse_filter_expr(ExprPtr n) {
    while (true) {
      if (is(Tok::Pipe)) n = parse_filter(std::move(n), false);
      else if (is_name("is")) n = parse_test(std::move(n));
      else if (is(Tok::LParen)) n = parse_call(std::move(n));
      else return n;
    }
  }

  ExprPtr parse_subscript(ExprPtr n) {
    const Token& at = next();
    if (at.type == Tok::Dot) {
      const Token& attr = next();
      if (attr.type == Tok::Name) {
        auto e = node(ExprKind::GetAttr, at);
        e->a = std::move(n);
        e->name = attr.text;
        return sealed(std::move(e));
      }
      if (attr.type != Tok::Int) fail_at("expected name or number", attr);
      auto e = node(ExprKind::GetItem, at);
      e->a = std::move(n);
      e->b = node(ExprKind::Const, attr);
      e->b->value = Value::integer(attr.ival);
      return sealed(std::move(e));
    }
    std::vector<ExprPtr> args;
    while (!is(Tok::RBracket)) {
      if (!args.empty()) expect(Tok::Comma);
      args.push_back(parse_subscribed());
    }
    expect(Tok::RBracket);
    auto e = node(ExprKind::GetItem, at);
    e->a = std::move(n);
    if (args.size() == 1) {
      e->b = std::move(args[0]);
    } else {
      e->b = node(ExprKind::Tuple, at);
      e->b->args = std::move(args);
      seal(*e->b);
    }
    return sealed(std::move(e));
  }

  ExprPtr parse_subscribed() {
    const Token& at = cur();
    ExprPtr start;
    if (is(Tok::Colon)) {
      next();
    } else {
      ExprPtr n = parse_expression(true);
      if (!is(Tok::Colon)) return n;
      next();
      start = std::move(n);
    }
    auto e = node(ExprKind::Slice, at);
    e->a = std::move(start);
    if (!is(Tok::Colon) && !is(Tok::RBracket) && !is(Tok::Comma)) e->b = parse_expression(true);
    if (skip_if(Tok::Colon))
      if (!is(Tok::RBracket) && !is(Tok::Comma)) e->c = parse_expression(true);
    return sealed(std::move(e));
  }

  void parse_call_args(Expr& e) {
    const Token& at = expect(Tok::LParen);
    bool require_comma = false;
    auto ensure = [&](bool ok) {
      if (!ok) fail_at("invalid syntax for function call expression", at);
    };
    while (!is(Tok::RParen)) {
      if (require_comma) {
        expect(Tok::Comma);
        if (is(Tok::RParen)) break;
      }
      if (is(Tok::Mul)) {
        ensure(!e.dyn_args && !e.dyn_kwargs);
        next();
        e.dyn_args = parse_expression(true);
      } else if (is(Tok::Pow)) {
        ensure(!e.dyn_kwargs);
        next();
        e.dyn_kwargs = parse_expression(true);
      } else if (is(Tok::Name) && look().type == Tok::Assign) {
        ensure(!e.dyn_kwargs);
        std::string key = next().text;
        next();
        e.kwargs.emplace_back(std::move(key), parse_expression(true));
      } else {
        ensure(!e.dyn_args && !e.dyn_kwargs && e.kwargs.empty());
        e.args.push_back(parse_expression(true));
      }
      require_comma = true;
    }
    expect(Tok::RParen);
  }

  ExprPtr parse_call(ExprPtr n) {
    auto e = node(ExprKind::Call, cur());
    e->a = std::move(n);
    parse_call_args(*e);
    return sealed(std::move(e));
  }

  ExprPtr parse_filter(ExprPtr n, bool start_inline) {
    while (is(Tok::Pipe) || start_inline) {
      if (!start_inline) next();
      const Token& name = expect(Tok::Name);
      auto e = node(ExprKind::Filter, name);
      e->name = name.text;
      while (skip_if(Tok::Dot)) e->name += "." + expect(Tok::Name).text;
      e->fn = filter_id(e->name);
      if (e->fn == kUnknown) fail_at("No filter named '" + e->name + "'.", name);
      if (is(Tok::LParen)) parse_call_args(*e);
      e->a = std::move(n);
      n = sealed(std::move(e));
      start_inline = false;
    }
    return n;
  }

  ExprPtr parse_test(ExprPtr n) {
    const Token& at = next();  // 'is'
    const bool negated = skip_name("not");
    const Token& name = expect(Tok::Name);
    auto e = node(ExprKind::Test, at);
    e->name = name.text;
    while (skip_if(Tok::Dot)) e->name += "." + expect(Tok::Name).text;
    e->fn = test_id(e->name);
    if (e->fn == kUnknown) fail_at("No test named '" + e->name + "'.", name);
    if (is(Tok::LParen)) {
      parse_call_args(*e);
    } else if ((is(Tok::Name) || is(Tok::String) || is(Tok::Int) || is(Tok::Float) ||
                is(Tok::LParen) || is(Tok::LBracket) || is(Tok::LBrace)) &&
               !is_name("else") && !is_name("or") && !is_name("and")) {
      if (is_name("is")) fail("You cannot chain multiple tests with is");
      e->args.push_back(parse_postfix(parse_primary()));
    }
    e->a = std::move(n);
    seal(*e);
    if (!negated) return e;
    auto no = node(ExprKind::Not, at);
    no->a = std::move(e);
    return sealed(std::move(no));
  }
};

}  // namespace

Program parse_program(std::string_view source) { return Parser(lex(source)).parse(); }

}  // namespace kiln::jinja
