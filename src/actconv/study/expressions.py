"""Activation expressions: a small, safe language of x, numbers, arithmetic and torch functions.

`where(x > 0, tanh(x), 0.25 * tanh(x))` is parsed with Python's `ast` and checked node by
node against a whitelist: the name `x`, number literals, + - * / ** and unary -/+,
comparisons, and calls of the functions in FUNCTIONS by name. Anything else (attribute
access, other names or calls, strings, subscripts, lambdas, comprehensions, keywords) is
refused in one line naming the offending piece. User text is never given to eval, exec or
compile: the checked tree is turned into nested Python closures over torch functions.
"""
import ast

from ..errors import ConfigError

MAX_LENGTH = 500        # characters of an expression: bounds the parser's work and nesting
MAX_DEPTH = 40          # nested nodes: deeper trees risk the interpreter's recursion limit
MAX_CONSTANT = 1e6      # |number literal|: larger ones are typos or attempts to overflow
MAX_EXPONENT = 64       # |literal exponent| of **: x ** 9 ** 9 ** 9 is refused, never computed

# name -> (number of arguments, the torch function's name in torch or torch.nn.functional).
FUNCTIONS = {
    **{f: (1, f) for f in ["tanh", "sigmoid", "exp", "log", "log1p", "expm1", "abs", "sqrt",
                           "sin", "cos", "atan", "sinh", "cosh", "asinh", "erf", "erfc", "sign",
                           "relu"]},
    "softplus": (1, "F.softplus"), "gelu": (1, "F.gelu"), "silu": (1, "F.silu"),
    "where": (3, "where"), "maximum": (2, "maximum"), "minimum": (2, "minimum"),
    "clamp": (3, "clamp"),  # clamp(x, low, high), low and high number literals
}
_BINARY = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "truediv", ast.Pow: "pow"}
_COMPARE = {ast.Gt: "gt", ast.GtE: "ge", ast.Lt: "lt", ast.LtE: "le", ast.Eq: "eq", ast.NotEq: "ne"}


def parse(text: str) -> ast.Expression:
    """The checked syntax tree of an expression; ConfigError naming the first forbidden piece."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("activation expression is empty")
    if len(text) > MAX_LENGTH:
        raise ConfigError(f"activation expression is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise ConfigError(f"activation expression {text.strip()!r} is not valid syntax: "
                          f"{getattr(e, 'msg', None) or e}") from None
    _check(tree.body, 0)
    return tree


def canonical(text: str) -> str:
    """One spelling per expression: spacing and number formats normalised by ast.unparse."""
    return ast.unparse(parse(text))


def _refuse(node: ast.AST, why: str):
    piece = ast.unparse(node) if isinstance(node, ast.expr) else type(node).__name__
    piece = piece if len(piece) <= 40 else piece[:37] + "..."
    raise ConfigError(f"activation expression: {why}: {piece!r}; allowed: x, numbers, "
                      f"+ - * / **, comparisons and the functions {', '.join(FUNCTIONS)}")


def _check(node: ast.AST, depth: int) -> None:
    if depth > MAX_DEPTH:
        _refuse(node, f"nested deeper than {MAX_DEPTH}")
    if isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            _refuse(node, "only number literals are allowed")
        if not abs(v) <= MAX_CONSTANT:
            _refuse(node, f"number literals are limited to {MAX_CONSTANT:g} in size")
    elif isinstance(node, ast.Name):
        if node.id != "x":
            _refuse(node, "the only name is x")
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY:
            _refuse(node, f"operator {type(node.op).__name__} is not allowed")
        if isinstance(node.op, ast.Pow) and not _has_x(node.right):
            e = _literal(node.right)
            if e is None or abs(e) > MAX_EXPONENT:
                _refuse(node, f"an exponent must contain x or be a number literal up to {MAX_EXPONENT}")
        _check(node.left, depth + 1)
        _check(node.right, depth + 1)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, (ast.USub, ast.UAdd)):
            _refuse(node, f"operator {type(node.op).__name__} is not allowed")
        _check(node.operand, depth + 1)
    elif isinstance(node, ast.Compare):
        if any(type(op) not in _COMPARE for op in node.ops):
            _refuse(node, "only the comparisons < <= > >= == != are allowed")
        for child in [node.left, *node.comparators]:
            _check(child, depth + 1)
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            _refuse(node.func, "calls are limited to the listed functions")
        if node.keywords:
            _refuse(node, "keyword arguments are not allowed")
        arity = FUNCTIONS[node.func.id][0]
        if len(node.args) != arity or any(isinstance(a, ast.Starred) for a in node.args):
            _refuse(node, f"{node.func.id} takes {arity} argument{'s' if arity > 1 else ''}")
        if node.func.id == "clamp" and any(_literal(a) is None for a in node.args[1:]):
            _refuse(node, "clamp's bounds must be number literals")
        for a in node.args:
            _check(a, depth + 1)
    else:
        _refuse(node, f"{type(node).__name__} is not allowed")


def _has_x(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) and n.id == "x" for n in ast.walk(node))


def _literal(node: ast.AST):
    """The value of a (signed) number literal, else None."""
    sign = 1
    while isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        sign, node = (-sign if isinstance(node.op, ast.USub) else sign), node.operand
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
            and not isinstance(node.value, bool):
        return sign * node.value
    return None


def compile_expression(text: str):
    """A function x -> tensor built from the checked tree: closures over torch calls."""
    import operator

    import torch
    import torch.nn.functional as F

    def function(name):
        path = FUNCTIONS[name][1]
        return getattr(F, path[2:]) if path.startswith("F.") else getattr(torch, path)

    def build(node):
        if isinstance(node, ast.Constant):
            value = float(node.value)  # a float tensor: no Python integer arithmetic ever runs
            return lambda x: torch.tensor(value, dtype=x.dtype, device=x.device)
        if isinstance(node, ast.Name):
            return lambda x: x
        if isinstance(node, ast.BinOp):
            op, left, right = getattr(operator, _BINARY[type(node.op)]), build(node.left), build(node.right)
            return lambda x: op(left(x), right(x))
        if isinstance(node, ast.UnaryOp):
            operand = build(node.operand)
            return (lambda x: -operand(x)) if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.Compare):
            parts = [build(n) for n in [node.left, *node.comparators]]
            ops = [getattr(operator, _COMPARE[type(o)]) for o in node.ops]

            def compare(x):
                values = [p(x) for p in parts]
                out = ops[0](values[0], values[1])
                for i in range(1, len(ops)):  # a < x < b means a < x and x < b, as in Python
                    out = out & ops[i](values[i], values[i + 1])
                return out
            return compare
        if isinstance(node, ast.Call):
            if node.func.id == "clamp":
                inner, low, high = build(node.args[0]), _literal(node.args[1]), _literal(node.args[2])
                return lambda x: torch.clamp(inner(x), float(low), float(high))
            fn, args = function(node.func.id), [build(a) for a in node.args]
            if node.func.id == "where":  # a broadcast condition: where(x > 0, x, 0) keeps x's shape
                return lambda x: torch.where(*torch.broadcast_tensors(*(a(x) for a in args)))
            return lambda x: fn(*(a(x) for a in args))
        raise AssertionError(f"unchecked node {type(node).__name__}")  # parse() refused it already

    return build(parse(text).body)
