"""A safe arithmetic calculator for the agent's tools node.

Small models are poor at arithmetic, so the agent hands expressions such as ``4194304/7e9*100``
to this module instead. The text is parsed with ``ast.parse(mode="eval")`` and the tree is
walked here; nothing is ever passed to ``eval``/``exec`` or compiled to code. Only numbers, the
constants ``pi`` and ``e``, the operators ``+ - * / // % **`` and a short list of functions are
allowed, and every step is bounded (input length, tree depth, exponent and result size) so that
no expression can hang or exhaust the process. Every refusal is a ``CalculatorError`` whose
message is one line meant for the user.
"""

import ast
import math
import operator
from collections.abc import Callable

Number = int | float

MAX_LENGTH = 500  # characters of input
MAX_DEPTH = 100  # nested expression nodes; a+b+c nests, so this also caps long sums
MAX_EXPONENT = 1000  # largest abs(b) in a ** b
MAX_DIGITS = 1000  # largest result, in decimal digits
SIGNIFICANT_DIGITS = 10  # used by format_number for floats

_INT_LIMIT = 10**MAX_DIGITS  # an int at or above this has more than MAX_DIGITS digits

CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}


class CalculatorError(ValueError):
    """An expression that is not allowed or cannot be computed; the message is for the user."""


def _log(x: Number, base: Number | None = None) -> float:
    return math.log(x) if base is None else math.log(x, base)


def _round(x: Number, ndigits: Number | None = None) -> Number:
    if ndigits is None:
        return round(x)
    if not isinstance(ndigits, int) or abs(ndigits) > MAX_DIGITS:
        raise CalculatorError(f"round() needs a whole number of digits up to {MAX_DIGITS}")
    return round(x, ndigits)


def _min(*args: Number) -> Number:
    return min(args)


def _max(*args: Number) -> Number:
    return max(args)


# name -> (function, fewest arguments, most arguments or None for any number)
FUNCTIONS: dict[str, tuple[Callable[..., Number], int, int | None]] = {
    "sqrt": (math.sqrt, 1, 1),
    "log": (_log, 1, 2),
    "log2": (math.log2, 1, 1),
    "log10": (math.log10, 1, 1),
    "exp": (math.exp, 1, 1),
    "abs": (abs, 1, 1),
    "round": (_round, 1, 2),
    "min": (_min, 1, None),
    "max": (_max, 1, None),
    "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1),
}

_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}

_OPERATOR_SYMBOLS: dict[type[ast.AST], str] = {
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitAnd: "&",
    ast.MatMult: "@",
    ast.Invert: "~",
    ast.Not: "not",
}

_NODE_NAMES: dict[type[ast.AST], str] = {
    ast.Subscript: "subscripts",
    ast.Lambda: "lambda",
    ast.BoolOp: "and/or",
    ast.Compare: "comparisons",
    ast.IfExp: "if/else",
    ast.NamedExpr: "assignment",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.List: "lists",
    ast.Tuple: "tuples",
    ast.Set: "sets",
    ast.Dict: "dicts",
    ast.JoinedStr: "strings",
    ast.Starred: "starred arguments",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.Slice: "slices",
}


def _not_allowed(what: str) -> CalculatorError:
    return CalculatorError(f"not allowed in a calculation: {what}")


def calculate(expression: str) -> Number:
    """Evaluate an arithmetic expression; int when the arithmetic was all integer, else float."""
    tree = _parse(expression)
    _check_depth(tree)
    return _evaluate(tree.body)


def format_number(value: Number) -> str:
    """Ints in full; floats with up to 10 significant digits and no trailing zeros."""
    if isinstance(value, int):
        return str(value)
    if value == 0:
        return "0"  # also turns -0.0 into "0"
    return f"{value:.{SIGNIFICANT_DIGITS}g}"


def _parse(expression: str) -> ast.Expression:
    if not isinstance(expression, str):
        raise CalculatorError("the expression must be text")
    if len(expression) > MAX_LENGTH:
        raise CalculatorError(f"expression is too long (at most {MAX_LENGTH} characters)")
    text = expression.strip()
    if not text:
        raise CalculatorError("empty expression")
    try:
        return ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise CalculatorError(f"not an arithmetic expression: {exc.msg}") from None
    except ValueError as exc:  # e.g. null bytes in the source
        raise CalculatorError(f"not an arithmetic expression: {exc}") from None
    except (RecursionError, MemoryError):
        raise CalculatorError("not an arithmetic expression: too complex to parse") from None


def _check_depth(tree: ast.Expression) -> None:
    """Bound the nesting of expression nodes (iteratively) so evaluation cannot recurse deeply."""
    stack: list[tuple[ast.AST, int]] = [(tree.body, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise CalculatorError(f"expression is too complex (more than {MAX_DEPTH} levels)")
        children = ast.iter_child_nodes(node)
        stack.extend((child, depth + 1) for child in children if isinstance(child, ast.expr))


def _evaluate(node: ast.AST) -> Number:
    if isinstance(node, ast.Constant):
        return _constant(node.value)
    if isinstance(node, ast.Name):
        return _name(node.id)
    if isinstance(node, ast.UnaryOp):
        return _unary(node)
    if isinstance(node, ast.BinOp):
        return _binary(node)
    if isinstance(node, ast.Call):
        return _call(node)
    if isinstance(node, ast.Attribute):
        raise _not_allowed(f"attribute access .{node.attr}")
    raise _not_allowed(_NODE_NAMES.get(type(node), type(node).__name__))


def _constant(value: object) -> Number:
    if isinstance(value, bool):
        raise _not_allowed(f"boolean {value}")
    if isinstance(value, int | float):
        return _checked(value)
    if isinstance(value, str | bytes):
        raise _not_allowed(f"string {value!r}")
    if isinstance(value, complex):
        raise _not_allowed(f"imaginary number {value!r}")
    raise _not_allowed(repr(value))


def _name(name: str) -> float:
    if name in CONSTANTS:
        return CONSTANTS[name]
    if name in FUNCTIONS:
        raise CalculatorError(f"{name} is a function; call it like {name}(x)")
    raise _not_allowed(f"name {name!r} (only {', '.join(CONSTANTS)} are known)")


def _unary(node: ast.UnaryOp) -> Number:
    if isinstance(node.op, ast.UAdd):
        return _evaluate(node.operand)
    if isinstance(node.op, ast.USub):
        return -_evaluate(node.operand)
    raise _not_allowed(f"operator {_OPERATOR_SYMBOLS.get(type(node.op), type(node.op).__name__)}")


def _binary(node: ast.BinOp) -> Number:
    if isinstance(node.op, ast.BitXor):
        raise CalculatorError("'^' is not allowed in a calculation; use ** for powers, e.g. 2**3")
    if isinstance(node.op, ast.Pow):
        operation: Callable[[Number, Number], Number] = _power
    elif type(node.op) in _BINARY:
        operation = _BINARY[type(node.op)]
    else:
        symbol = _OPERATOR_SYMBOLS.get(type(node.op), type(node.op).__name__)
        raise _not_allowed(f"operator {symbol}")
    left = _evaluate(node.left)
    right = _evaluate(node.right)
    return _guarded(operation, left, right)


def _power(base: Number, exponent: Number) -> Number:
    """a ** b, refused before computing when b or the result would be too large."""
    if abs(exponent) > MAX_EXPONENT:
        raise CalculatorError(f"exponent is too large (at most {MAX_EXPONENT})")
    if base != 0 and exponent * math.log10(abs(base)) > MAX_DIGITS:
        raise CalculatorError(f"result is too large (more than {MAX_DIGITS} digits)")
    return base**exponent


def _call(node: ast.Call) -> Number:
    if not isinstance(node.func, ast.Name):
        called = ast.unparse(node.func)[:40]
        raise _not_allowed(f"Call to {called} (call functions by plain name, e.g. sqrt(2))")
    name = node.func.id
    if name not in FUNCTIONS:
        raise _not_allowed(f"Call to {name}")
    if node.keywords:
        raise _not_allowed(f"keyword arguments in {name}()")
    function, fewest, most = FUNCTIONS[name]
    count = len(node.args)
    if count < fewest or (most is not None and count > most):
        if most is None:
            expected = f"at least {fewest}"
        else:
            expected = str(fewest) if fewest == most else f"{fewest} or {most}"
        raise CalculatorError(f"{name}() takes {expected} argument(s), got {count}")
    args = [_evaluate(arg) for arg in node.args]
    return _guarded(function, *args, name=name)


def _guarded(function: Callable[..., Number], *args: Number, name: str = "") -> Number:
    """Run one step, turning Python's arithmetic exceptions into one-line CalculatorErrors."""
    where = f" in {name}()" if name else ""
    try:
        result = function(*args)
    except ZeroDivisionError:
        raise CalculatorError("division by zero") from None
    except OverflowError:
        raise CalculatorError(f"result is too large{where}") from None
    except CalculatorError:
        raise
    except ValueError:
        raise CalculatorError(f"math domain error{where}") from None
    except TypeError as exc:
        raise CalculatorError(f"cannot compute{where}: {exc}") from None
    return _checked(result)


def _checked(value: object) -> Number:
    """Refuse results that are not finite real numbers or have more than MAX_DIGITS digits."""
    if isinstance(value, complex):
        raise CalculatorError("result is not a real number")
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculatorError("result is too large" if math.isinf(value) else "result is undefined")
    if isinstance(value, int) and abs(value) >= _INT_LIMIT:
        raise CalculatorError(f"result is too large (more than {MAX_DIGITS} digits)")
    assert isinstance(value, int | float)
    return value
