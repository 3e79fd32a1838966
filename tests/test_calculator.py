"""The safe calculator (agent.calculator) and its LangChain tool (agent.tools)."""

import math

import pytest
from langchain_core.tools import BaseTool, ToolException

from agent.calculator import MAX_LENGTH, CalculatorError, calculate, format_number
from agent.tools import calculator, local_tools, tool_schema


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("2**10", 1024),
        ("(3+4)*2", 14),
        ("7//2", 3),
        ("7 % 3", 1),
        ("-2**2", -4),
        ("2**-2", 0.25),
        ("abs(-3)", 3),
        ("min(3, 1, 2)", 1),
        ("max(3, 1, 2)", 3),
        ("floor(2.5)", 2),
        ("ceil(2.1)", 3),
        ("round(2.5)", 2),
        ("10**999 // 10**998", 10),
    ],
)
def test_integer_results_stay_int(expression: str, expected: int) -> None:
    result = calculate(expression)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("sqrt(16)", 4.0),
        ("7/2", 3.5),
        ("4194304/7e9*100", 4194304 / 7e9 * 100),
        ("log(8, 2)", 3.0),
        ("log(e)", 1.0),
        ("log2(1024)", 10.0),
        ("log10(1000)", 3.0),
        ("exp(0)", 1.0),
        ("round(2.567, 2)", 2.57),
        ("2 * pi", 2 * math.pi),
        ("  1.5 + 1 ", 2.5),
    ],
)
def test_float_results(expression: str, expected: float) -> None:
    result = calculate(expression)
    assert isinstance(result, float)
    assert result == pytest.approx(expected)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os')", "not allowed in a calculation: Call to __import__"),
        ("open('x')", "not allowed in a calculation: Call to open"),
        ("().__class__", "attribute access"),
        ("(1).__class__", "attribute access"),
        ("math.sqrt(4)", "Call to math.sqrt"),
        ("[1, 2][0]", "not allowed"),
        ("(lambda: 1)()", "not allowed"),
        ("lambda: 1", "lambda"),
        ("[x for x in range(3)]", "comprehensions"),
        ("'a' * 3", "string"),
        ("x + 1", "name 'x'"),
        ("True + 1", "boolean"),
        ("1 < 2", "comparisons"),
        ("1 and 2", "and/or"),
        ("1 << 2", "operator <<"),
        ("sqrt(x=4)", "keyword"),
        ("sqrt(1, 2)", "argument"),
        ("1j", "imaginary"),
    ],
)
def test_refuses_anything_not_whitelisted(expression: str, message: str) -> None:
    with pytest.raises(CalculatorError, match="not allowed|argument") as caught:
        calculate(expression)
    assert message in str(caught.value)


def test_xor_is_refused_with_a_hint_to_use_power() -> None:
    with pytest.raises(CalculatorError, match=r"\*\*"):
        calculate("2^3")


@pytest.mark.parametrize("expression", ["9**9**9", "2**1001", "10**1000", "0.1**-1000"])
def test_huge_powers_are_refused_without_computing_them(expression: str) -> None:
    with pytest.raises(CalculatorError, match="too large"):
        calculate(expression)


def test_integer_results_over_1000_digits_are_refused() -> None:
    assert calculate("10**999") == 10**999
    with pytest.raises(CalculatorError, match="1000 digits"):
        calculate("10**999 * 10")


@pytest.mark.parametrize("expression", ["1e308 * 10", "1e999", "exp(1000)", "10**999 / 3"])
def test_overflow_is_refused(expression: str) -> None:
    with pytest.raises(CalculatorError, match="too large"):
        calculate(expression)


def test_long_input_is_refused_before_parsing() -> None:
    with pytest.raises(CalculatorError, match="too long"):
        calculate("1+" * 500_000 + "1")  # about 1 MB
    with pytest.raises(CalculatorError, match="too long"):
        calculate("1" * (MAX_LENGTH + 1))


@pytest.mark.parametrize("expression", ["-" * 300 + "1", "+".join(["1"] * 200)])
def test_deep_nesting_is_refused(expression: str) -> None:
    with pytest.raises(CalculatorError, match="too complex"):
        calculate(expression)


@pytest.mark.parametrize("expression", ["1/0", "5 // 0", "5 % 0", "0**-1", "1.5 / 0.0"])
def test_division_by_zero(expression: str) -> None:
    with pytest.raises(CalculatorError, match="^division by zero$"):
        calculate(expression)


@pytest.mark.parametrize("expression", ["sqrt(-1)", "log(0)", "log(-1)", "log10(0)"])
def test_math_domain_errors(expression: str) -> None:
    with pytest.raises(CalculatorError, match="math domain error"):
        calculate(expression)


def test_complex_results_are_refused() -> None:
    with pytest.raises(CalculatorError, match="not a real number"):
        calculate("(-8) ** (1/3)")


@pytest.mark.parametrize("expression", ["2 +", "2 3", "", "   ", "(1", "1\x002"])
def test_syntax_errors(expression: str) -> None:
    with pytest.raises(CalculatorError, match="not an arithmetic expression|empty"):
        calculate(expression)


def test_errors_are_value_errors_with_one_line_messages() -> None:
    with pytest.raises(ValueError) as caught:
        calculate("2 +\n")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (42, "42"),
        (-1024, "-1024"),
        (10**30, "1" + "0" * 30),
        (4.0, "4"),
        (3.5, "3.5"),
        (0.1 + 0.2, "0.3"),
        (1 / 3, "0.3333333333"),
        (4194304 / 7e9 * 100, "0.05991862857"),
        (-0.0, "0"),
    ],
)
def test_format_number(value: int | float, text: str) -> None:
    assert format_number(value) == text


def test_calculator_tool_returns_formatted_result() -> None:
    assert calculator.invoke({"expression": "6*7"}) == "42"
    assert calculator.invoke({"expression": "0.1+0.2"}) == "0.3"


@pytest.mark.parametrize("expression", ["__import__('os')", "1/0", "2^3"])
def test_calculator_tool_raises_tool_exception(expression: str) -> None:
    with pytest.raises(ToolException):
        calculator.invoke({"expression": expression})


def test_local_tools_are_langchain_tools() -> None:
    tools = local_tools()
    assert calculator in tools
    assert all(isinstance(tool, BaseTool) for tool in tools)
    assert calculator.name == "calculator"
    assert calculator.description


def test_tool_schema_keeps_only_what_the_grammar_needs() -> None:
    schema = tool_schema(calculator)
    assert set(schema) == {"type", "properties", "required"}
    assert schema["type"] == "object"
    assert schema["properties"]["expression"]["type"] == "string"
    assert schema["required"] == ["expression"]


def test_tool_schema_accepts_dict_schemas_like_mcp_tools_give() -> None:
    from langchain_core.tools import StructuredTool

    schema = {
        "title": "search",
        "type": "object",
        "properties": {"query": {"type": "string"}},
        "required": ["query"],
        "additionalProperties": False,
    }
    tool = StructuredTool(
        name="search", description="Search.", args_schema=schema, func=lambda query: query
    )
    assert tool_schema(tool) == {
        "type": "object",
        "properties": {"query": {"type": "string"}},
        "required": ["query"],
    }
