"""Rendered by shape, a notice is the very text Jinja2 gives when it renders it in full."""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from importlib import resources
from pathlib import Path

import pytest

from preaviso.render import Renderer
from preaviso.render.shapes import MARK, Shapes, shapeable
from preaviso.schemas.events import CustomerUpserted, Locale
from preaviso.schemas.records import Impact, ImpactKind, OwnedProduct
from tests.unit.test_render import COMPANY, TODAY, discontinuation, policy_change

NAMES = [
    "Ana García",
    "José  María de la Peña",  # two spaces: kept in the body as they are
    'Ann & <b>Bob</b> "O\'Neil"',
    "Ñandú 🎉 Ünïcode",
    "{{ name }} {% if x %}",
    "x",
]


def customers() -> list[CustomerUpserted]:
    return [
        CustomerUpserted(
            customer_id=f"c-{i}", email=f"c{i}@example.com", name=name, locale=locale, region="r"
        )
        for i, name in enumerate(NAMES)
        for locale in Locale
    ]


def impacts(customer_id: str) -> list[Impact]:
    products = [
        OwnedProduct(sku=f"SKU-{n}", product_name=f"Modelo {n}", purchase_date=date(2021, 5, n))
        for n in (1, 2)
    ]
    return [
        policy_change(customer_id=customer_id),
        policy_change(customer_id=customer_id, old_terms=None, reason="Another reason."),
        policy_change(customer_id=customer_id, effective_date=TODAY - timedelta(days=3)),
        discontinuation(customer_id=customer_id),
        discontinuation(customer_id=customer_id, products=products, replacement_offer=None),
    ]


def test_every_packaged_template_trio_is_rendered_by_shape() -> None:
    env = Renderer(COMPANY)._env
    for kind in ImpactKind:
        for locale in Locale:
            names = [f"{kind.value}.{locale.value}.{e}" for e in ("subject.txt", "txt", "html")]
            assert shapeable(env, *names), names


def test_each_notice_is_what_a_full_rendering_gives() -> None:
    shaped, full = Renderer(COMPANY), Renderer(COMPANY, shapes=False)
    for who in customers():
        for impact in impacts(who.customer_id):
            # Twice: the first builds the shape, the second only fills it in.
            for _ in range(2):
                got = shaped.render(impact, who, today=TODAY)
                assert got == full.render(impact, who, today=TODAY), (who.name, impact.kind)
                assert MARK not in got.text + got.html


def test_a_value_holding_the_mark_renders_in_full() -> None:
    company = f"ACME {MARK} Ltd"
    shaped, full = Renderer(company), Renderer(company, shapes=False)
    who = customers()[0]

    got = shaped.render(policy_change(customer_id=who.customer_id), who, today=TODAY)

    assert got == full.render(policy_change(customer_id=who.customer_id), who, today=TODAY)


@pytest.mark.parametrize(
    ("template", "line"),
    [
        ("policy_change.es.txt", "Hola, {{ name | upper }}:"),
        ("policy_change.es.txt", "Hola{% if name %}, {{ name }}{% endif %}:"),
        ("policy_change.es.txt", "{% set name = 'Otro' %}Hola, {{ name }}:"),
        ("policy_change.es.html", "{% extends '_layout.html' %}{% block content %}{{ name|e }}"),
        ("policy_change.es.subject.txt", "Aviso para {{ name }}: {{ title }}"),
    ],
    ids=["filtered", "tested", "set", "filtered-html", "in-subject"],
)
def test_a_name_used_otherwise_than_as_it_is_renders_in_full(
    tmp_path: Path, template: str, line: str
) -> None:
    shutil.copytree(Path(str(resources.files("preaviso.render") / "templates")), tmp_path / "t")
    path = tmp_path / "t" / template
    original = path.read_text()
    _, _, rest = original.partition("\n")
    if template.endswith(".html"):  # keep the rest of the block after the new first lines
        path.write_text(line + original.split("{% block content %}", 1)[1])
    elif template.endswith("subject.txt"):
        path.write_text(line)
    else:
        path.write_text(line + "\n" + rest)
    shaped = Renderer(COMPANY, tmp_path / "t")
    full = Renderer(COMPANY, tmp_path / "t", shapes=False)
    assert not shapeable(shaped._env, "policy_change.es.subject.txt", *[
        f"policy_change.es.{e}" for e in ("txt", "html")
    ])  # fmt: skip

    for who in customers():
        if who.locale is Locale.ES:
            impact = policy_change(customer_id=who.customer_id)
            got = shaped.render(impact, who, today=TODAY)
            assert got == full.render(impact, who, today=TODAY)
            assert MARK not in got.subject + got.text + got.html


def test_a_context_that_cannot_be_a_key_renders_in_full() -> None:
    calls: list[dict[str, object]] = []

    def render(context: dict[str, object]) -> tuple[str, str, str]:
        calls.append(context)
        return "s", f"t {context['name']}", "h"

    shapes = Shapes(render)
    context = {"name": "Ana", "extra": {"a": 1}}

    assert shapes.render(context) == ("s", "t Ana", "h")
    assert calls == [context]


EDITS = {
    "filter-block": ("txt", "{% filter upper %}Hello {{ name }},{% endfilter %}"),
    "wordwrap-block": ("txt", "{% filter wordwrap(12) %}Hello dear {{ name }},{% endfilter %}"),
    "set-block": ("txt", "{% set g %}{{ name }}{% endset %}Hello {{ g }} ({{ g|length }}),"),
    "macro-call": ("txt", "{% macro m() %}{{ caller()|upper }}{% endmacro %}"
                          "{% call m() %}Hello {{ name }},{% endcall %}"),
    "autoescape-on-in-text": ("txt", "{% autoescape true %}Hello {{ name }},{% endautoescape %}"),
    "autoescape-off-in-html": (
        "html", "{% autoescape false %}<p>Hello {{ name }},</p>{% endautoescape %}"
    ),
    "self-block-as-value": ("html", "<p>Hello {{ name }},</p><!--{{ self.why()|length }}-->"),
}  # fmt: skip


@pytest.mark.parametrize(("part", "greeting"), EDITS.values(), ids=EDITS.keys())
def test_a_name_inside_a_block_that_changes_its_output_renders_in_full(
    tmp_path: Path, part: str, greeting: str
) -> None:
    """Output as it is, but inside something that filters, captures or re-escapes it."""
    shutil.copytree(Path(str(resources.files("preaviso.render") / "templates")), tmp_path / "t")
    path = tmp_path / "t" / f"policy_change.en.{part}"
    plain = "<p>Hello {{ name }},</p>" if part == "html" else "Hello {{ name }},"
    assert plain in path.read_text()
    path.write_text(path.read_text().replace(plain, greeting))
    names = [f"policy_change.en.{e}" for e in ("subject.txt", "txt", "html")]
    shaped = Renderer(COMPANY, tmp_path / "t")
    full = Renderer(COMPANY, tmp_path / "t", shapes=False)

    assert not shapeable(shaped._env, *names)
    for who in customers():
        if who.locale is Locale.EN:
            impact = policy_change(customer_id=who.customer_id)
            assert shaped.render(impact, who, today=TODAY) == full.render(impact, who, today=TODAY)


def test_values_equal_in_python_but_written_differently_are_different_shapes() -> None:
    shapes = Shapes(lambda c: ("s", f"{c['flag']} {c['name']}", "h"))

    assert shapes.render({"name": "Ana", "flag": True})[1] == "True Ana"
    assert shapes.render({"name": "Ana", "flag": 1})[1] == "1 Ana"
    assert shapes.render({"name": "Ana", "flag": 1.0})[1] == "1.0 Ana"
