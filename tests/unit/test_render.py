"""What a customer reads: the subject, text and HTML of a notice, in Spanish and English."""

from __future__ import annotations

import html as html_lib
import re
import shutil
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from jinja2 import TemplateNotFound, UndefinedError

from preaviso.render import RenderedNotice, Renderer
from preaviso.schemas.events import CustomerUpserted, Locale, PolicyKind
from preaviso.schemas.records import Impact, ImpactKind, OwnedProduct

TODAY = date(2026, 12, 1)
EFFECTIVE = date(2027, 3, 1)
COMPANY = "Example Appliances"


def customer(locale: Locale = Locale.ES, name: str = "Ana García") -> CustomerUpserted:
    return CustomerUpserted(
        customer_id="c-1", email="ana@example.com", name=name, locale=locale, region="madrid"
    )


def discontinuation(**changes: Any) -> Impact:
    fields: dict[str, Any] = {
        "notice_id": "n-1",
        "kind": ImpactKind.DISCONTINUATION,
        "customer_id": "c-1",
        "cause_event_id": "e-1",
        "reason": "You own a product of model Modelo X (SKU LV-X-01).",
        "effective_date": EFFECTIVE,
        "model_name": "Lavavajillas Modelo X",
        "products": [
            OwnedProduct(
                sku="LV-X-01", product_name="Lavavajillas Modelo X", purchase_date=date(2021, 5, 3)
            )
        ],
        "last_order_date": date(2027, 1, 31),
        "spare_parts_until": date(2032, 3, 1),
        "replacement_offer": "20% off the Modelo Y.\nValid until 31 December.",
    }
    return Impact(**(fields | changes))


def policy_change(**changes: Any) -> Impact:
    fields: dict[str, Any] = {
        "notice_id": "n-2",
        "kind": ImpactKind.POLICY_CHANGE,
        "customer_id": "c-1",
        "cause_event_id": "e-2",
        "reason": "The policy applies to customers in region madrid.",
        "scope_region": "madrid",
        "effective_date": EFFECTIVE,
        "policy_id": "warranty-2027",
        "policy_kind": PolicyKind.WARRANTY,
        "title": "Warranty extended to 3 years",
        "old_terms": "2 years on every appliance.",
        "new_terms": "3 years on every appliance.\nBatteries: 1 year.",
        "required_notice_days": 30,
    }
    return Impact(**(fields | changes))


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(COMPANY)


def render(renderer: Renderer, impact: Impact, locale: Locale = Locale.ES) -> RenderedNotice:
    return renderer.render(impact, customer(locale), today=TODAY)


def visible_text(document: str) -> str:
    """What a reader of the HTML part sees, as one whitespace-normalised line."""
    body = document.split("<body", 1)[1]
    return " ".join(html_lib.unescape(re.sub(r"<[^>]+>", "", body)).split())


# --- Subjects -------------------------------------------------------------------------


def test_discontinuation_subject_names_the_model_in_each_language(renderer: Renderer) -> None:
    assert render(renderer, discontinuation()).subject == (
        "Aviso: Lavavajillas Modelo X deja de fabricarse"
    )
    assert render(renderer, discontinuation(), Locale.EN).subject == (
        "Notice: Lavavajillas Modelo X is being discontinued"
    )


@pytest.mark.parametrize(
    ("kind", "spanish", "english"),
    [
        (PolicyKind.WARRANTY, "cambio en la garantía", "change to our warranty"),
        (PolicyKind.RETURNS, "cambio en la política de devoluciones", "change to our returns"),
        (PolicyKind.BILLING, "cambio en la facturación", "change to our billing"),
        (PolicyKind.BUSINESS_HOURS, "cambio en el horario de atención", "our business hours"),
    ],
)
def test_policy_subject_names_the_policy_and_the_date(
    renderer: Renderer, kind: PolicyKind, spanish: str, english: str
) -> None:
    impact = policy_change(policy_kind=kind)
    assert render(renderer, impact).subject == f"Aviso: {spanish} a partir del 1 de marzo de 2027"
    english_subject = render(renderer, impact, Locale.EN).subject
    assert english_subject.startswith("Notice: ")
    assert english in english_subject
    assert english_subject.endswith(", effective March 1, 2027")


def test_a_policy_of_kind_other_is_named_by_its_title(renderer: Renderer) -> None:
    impact = policy_change(policy_kind=PolicyKind.OTHER, title="Gastos de envío")
    assert render(renderer, impact).subject == (
        "Aviso: cambio en «Gastos de envío» a partir del 1 de marzo de 2027"
    )
    assert render(renderer, impact, Locale.EN).subject == (
        "Notice: change to “Gastos de envío”, effective March 1, 2027"
    )
    assert "nuestras condiciones" in render(renderer, impact).text


def test_subject_is_one_line_with_whitespace_collapsed(renderer: Renderer) -> None:
    subject = render(renderer, discontinuation(model_name="Modelo    X")).subject
    assert subject == "Aviso: Modelo X deja de fabricarse"


@pytest.mark.parametrize("model_name", ["Modelo X\r\nBcc: all@example.com", "Modelo\tX", "X\x00"])
def test_subject_with_a_control_character_is_refused(renderer: Renderer, model_name: str) -> None:
    # Validation already refuses these; model_copy stands for a bypassed contract.
    impact = discontinuation().model_copy(update={"model_name": model_name})
    with pytest.raises(ValueError, match="one line"):
        render(renderer, impact)


# --- Discontinuation bodies ------------------------------------------------------------


def test_spanish_discontinuation_says_what_ends_when_and_what_to_do(renderer: Renderer) -> None:
    notice = render(renderer, discontinuation())
    for part in (notice.text, visible_text(notice.html)):
        assert "Hola, Ana García:" in part
        assert "Lavavajillas Modelo X deja de fabricarse el 1 de marzo de 2027." in part
        assert "Lavavajillas Modelo X (SKU LV-X-01), el 3 de mayo de 2021" in part
        assert "Último día para pedir este modelo: 31 de enero de 2027" in part
        assert "Repuestos disponibles hasta: 1 de marzo de 2032" in part
        assert "pídalos a más tardar el 1 de marzo de 2032" in part
        assert "20% off the Modelo Y." in part
        assert "Valid until 31 December." in part
        assert "contacte con nuestro servicio de atención al cliente" in part
        assert (
            "Por qué recibe este mensaje: usted compró Lavavajillas Modelo X (ref. LV-X-01) "
            "el 3 de mayo de 2021" in part
        )
        assert "El equipo de Example Appliances" in part


def test_english_discontinuation_says_what_ends_when_and_what_to_do(renderer: Renderer) -> None:
    notice = render(renderer, discontinuation(), Locale.EN)
    for part in (notice.text, visible_text(notice.html)):
        assert "Hello Ana García," in part
        assert "Lavavajillas Modelo X is being discontinued on March 1, 2027." in part
        assert "Lavavajillas Modelo X (SKU LV-X-01) on May 3, 2021" in part
        assert "Last day to order this model: January 31, 2027" in part
        assert "Spare parts available until: March 1, 2032" in part
        assert "please order them by March 1, 2032" in part
        assert "20% off the Modelo Y." in part
        assert "please contact our customer service" in part
        assert (
            "Why you are receiving this: you bought Lavavajillas Modelo X (SKU LV-X-01) "
            "on May 3, 2021" in part
        )
        assert "The Example Appliances team" in part


def test_every_owned_product_is_listed(renderer: Renderer) -> None:
    second = OwnedProduct(
        sku="LV-X-02", product_name="Lavavajillas Modelo X Plus", purchase_date=date(2023, 11, 20)
    )
    impact = discontinuation(products=[*discontinuation().products, second])
    text = render(renderer, impact, Locale.EN).text
    assert "- Lavavajillas Modelo X (SKU LV-X-01) on May 3, 2021" in text
    assert "- Lavavajillas Modelo X Plus (SKU LV-X-02) on November 20, 2023" in text


OPTIONAL_WORDING = ["Repuestos", "spare parts", "Spare parts", "oferta", "offer", "pedir", "order"]
OPTIONAL_WORDING += ["usted compró", "you bought"]


@pytest.mark.parametrize("locale", list(Locale))
def test_missing_optional_details_leave_no_empty_sentences(
    renderer: Renderer, locale: Locale
) -> None:
    impact = discontinuation(
        last_order_date=None, spare_parts_until=None, replacement_offer=None, products=[]
    )
    notice = render(renderer, impact, locale)
    for part in (notice.text, visible_text(notice.html)):
        assert "None" not in part
        for absent in OPTIONAL_WORDING:
            assert absent not in part
    assert "\n\n\n" not in notice.text
    assert not re.search(r"[ \t]$", notice.text, re.MULTILINE)
    # Every label that ends in a colon is followed by what it announces.
    for line, after in zip(notice.text.splitlines(), notice.text.splitlines()[1:], strict=False):
        if line.endswith(":") and not line.startswith(("Hola", "Hello")):
            assert after.strip(), f"{line!r} announces nothing"


def test_a_deadline_already_past_is_no_longer_offered_as_an_action(renderer: Renderer) -> None:
    impact = discontinuation(spare_parts_until=date(2026, 11, 1))
    text = render(renderer, impact).text
    assert "Repuestos disponibles hasta: 1 de noviembre de 2026" in text
    assert "pídalos" not in text


def test_a_discontinuation_already_in_effect_is_told_in_the_past(renderer: Renderer) -> None:
    later = date(2027, 6, 1)
    spanish = renderer.render(discontinuation(), customer(), today=later).text
    english = renderer.render(discontinuation(), customer(Locale.EN), today=later).text
    assert "Lavavajillas Modelo X dejó de fabricarse el 1 de marzo de 2027." in spanish
    assert "Lavavajillas Modelo X was discontinued on March 1, 2027." in english


def test_a_discontinuation_without_a_model_name_is_refused(renderer: Renderer) -> None:
    with pytest.raises(ValueError, match="model_name"):
        render(renderer, discontinuation(model_name=None))


# --- Policy change bodies ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        (
            Locale.ES,
            [
                "Hola, Ana García:",
                "un cambio en la garantía que se aplicará a partir del 1 de marzo de 2027.",
                "Qué cambia: Warranty extended to 3 years",
                "Antes:",
                "A partir del 1 de marzo de 2027:",
                "contacte con nuestro servicio de atención al cliente antes del 1 de marzo de 2027",
                "Por qué recibe este mensaje: este cambio se aplica a los clientes de su zona "
                "(madrid)",
                "El equipo de Example Appliances",
            ],
        ),
        (
            Locale.EN,
            [
                "Hello Ana García,",
                "a change to our warranty that takes effect on March 1, 2027.",
                "What changes: Warranty extended to 3 years",
                "Before:",
                "From March 1, 2027:",
                "please contact our customer service before March 1, 2027",
                "Why you are receiving this: this change applies to customers in your region "
                "(madrid).",
                "The Example Appliances team",
            ],
        ),
    ],
)
def test_policy_change_shows_old_and_new_terms_and_the_date(
    renderer: Renderer, locale: Locale, expected: list[str]
) -> None:
    notice = render(renderer, policy_change(), locale)
    terms = ["2 years on every appliance.", "3 years on every appliance.", "Batteries: 1 year."]
    for part in (notice.text, visible_text(notice.html)):
        for phrase in [*expected, *terms]:
            assert phrase in part
    assert notice.text.index("2 years on") < notice.text.index("3 years on")
    assert "3 years on every appliance.\nBatteries: 1 year." in notice.text
    assert "3 years on every appliance.<br>\nBatteries: 1 year." in notice.html


def test_a_policy_without_previous_terms_omits_the_before_section(renderer: Renderer) -> None:
    notice = render(renderer, policy_change(old_terms=""), Locale.EN)
    assert "Before" not in notice.text
    assert "Before" not in notice.html
    assert "From March 1, 2027:\n3 years on every appliance." in notice.text


def test_a_policy_already_in_effect_is_told_in_the_past(renderer: Renderer) -> None:
    text = renderer.render(policy_change(), customer(), today=date(2027, 3, 2)).text
    assert "que se aplica desde el 1 de marzo de 2027" in text
    assert "antes del 1 de marzo" not in text


def test_a_policy_change_without_new_terms_is_refused(renderer: Renderer) -> None:
    with pytest.raises(ValueError, match="new_terms"):
        render(renderer, policy_change(new_terms=None))


# --- Untrusted input --------------------------------------------------------------------

HOSTILE_PRODUCT = "<script>alert(1)</script>"
HOSTILE_NAME = "O'Brien & Sons"


def hostile_notice(renderer: Renderer) -> RenderedNotice:
    product = OwnedProduct(
        sku="LV-X-01", product_name=HOSTILE_PRODUCT, purchase_date=date(2021, 5, 3)
    )
    impact = discontinuation(products=[product], replacement_offer="Model <b>Y</b> & more")
    return renderer.render(impact, customer(name=HOSTILE_NAME), today=TODAY)


def test_html_escapes_every_value_from_events(renderer: Renderer) -> None:
    document = hostile_notice(renderer).html
    assert "<script>" not in document
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in document
    assert "O&#39;Brien &amp; Sons" in document
    assert "Model &lt;b&gt;Y&lt;/b&gt; &amp; more" in document


def test_text_shows_values_from_events_verbatim(renderer: Renderer) -> None:
    text = hostile_notice(renderer).text
    assert f"Hola, {HOSTILE_NAME}:" in text
    assert f"- {HOSTILE_PRODUCT} (SKU LV-X-01)" in text
    assert "Model <b>Y</b> & more" in text
    assert "&amp;" not in text
    assert "&lt;" not in text


def test_control_characters_in_free_text_are_dropped_from_bodies(renderer: Renderer) -> None:
    notice = render(renderer, discontinuation(replacement_offer="Line one\r\nLine\x1b[31m two\x00"))
    assert "Line one\nLine[31m two" in notice.text
    assert "\x1b" not in notice.html
    assert "\x00" not in notice.html
    assert "\r" not in notice.text


def test_a_customer_never_receives_another_customers_notice(renderer: Renderer) -> None:
    stranger = customer().model_copy(update={"customer_id": "c-2"})
    with pytest.raises(ValueError, match="c-2"):
        renderer.render(discontinuation(), stranger, today=TODAY)


# --- The HTML document -----------------------------------------------------------------


@pytest.mark.parametrize("locale", list(Locale))
@pytest.mark.parametrize("impact", [discontinuation(), policy_change()], ids=["disc", "policy"])
def test_html_is_a_full_document_in_the_customers_language(
    renderer: Renderer, impact: Impact, locale: Locale
) -> None:
    notice = render(renderer, impact, locale)
    assert notice.html.startswith("<!DOCTYPE html>")
    assert f'<html lang="{locale.value}"' in notice.html
    assert f"<title>{html_lib.escape(notice.subject, quote=True)}</title>" in notice.html
    assert '<meta charset="utf-8">' in notice.html
    assert "<style" not in notice.html  # inline styles only: many mail clients drop <style>


@pytest.mark.parametrize("locale", list(Locale))
@pytest.mark.parametrize(
    "impact",
    [discontinuation(), discontinuation(replacement_offer=None, products=[]), policy_change()],
    ids=["disc", "disc-minimal", "policy"],
)
def test_text_says_the_same_as_the_html(renderer: Renderer, impact: Impact, locale: Locale) -> None:
    notice = render(renderer, impact, locale)
    seen = visible_text(notice.html)
    for line in notice.text.splitlines():
        sentence = " ".join(line.removeprefix("- ").split()).removesuffix(":")
        assert sentence in seen, f"{sentence!r} is in the text part but not in the HTML"


def test_rendering_the_same_day_twice_gives_the_same_bytes(renderer: Renderer) -> None:
    assert render(renderer, discontinuation()) == render(renderer, discontinuation())


# --- Templates ---------------------------------------------------------------------------


def copy_of_the_templates(tmp_path: Path) -> Path:
    source = resources.files("preaviso.render") / "templates"
    with resources.as_file(source) as folder:
        shutil.copytree(folder, tmp_path / "templates")
    return tmp_path / "templates"


def test_a_template_using_an_unknown_variable_fails_instead_of_leaving_a_blank(
    tmp_path: Path,
) -> None:
    folder = copy_of_the_templates(tmp_path)
    (folder / "discontinuation.es.txt").write_text("Hola, {{ nickname }}:\n", encoding="utf-8")
    renderer = Renderer(COMPANY, templates_dir=folder)
    with pytest.raises(UndefinedError, match="nickname"):
        render(renderer, discontinuation())
    assert render(renderer, discontinuation(), Locale.EN).subject  # the other templates work


def test_a_missing_template_is_found_when_the_renderer_is_built(tmp_path: Path) -> None:
    folder = copy_of_the_templates(tmp_path)
    (folder / "policy_change.en.html").unlink()
    with pytest.raises(TemplateNotFound, match=r"policy_change\.en\.html"):
        Renderer(COMPANY, templates_dir=folder)


def test_a_company_name_is_required() -> None:
    with pytest.raises(ValueError, match="company_name"):
        Renderer("  ")
