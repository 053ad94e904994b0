"""A receipt rendered as PDF (fpdf2), laid out after the CERFA n° 11580 model: beneficiary,
donor, amount in figures and words, date, nature and method, the certification and the
tax-reduction mention. Pure: a receipt document in, PDF bytes out."""

from __future__ import annotations

import unicodedata
from datetime import date
from typing import Any

from fpdf import FPDF

from memberships.receipts.domain import (
    BENEFICIARY_LABELS,
    METHOD_LABELS,
    NATURE_LABELS,
    tax_reduction_cents,
)

FONT = "Helvetica"
#: letters Unicode does not decompose into a Latin-1 base
_NO_DECOMPOSITION = str.maketrans(
    {"€": "EUR", "œ": "oe", "Œ": "OE", "’": "'", "Ł": "L", "ł": "l", "Đ": "D", "đ": "d"}
)


def latin1(text: str) -> str:
    """The PDF core fonts cover Latin-1 (all of French but a few ligatures): anything
    else is written without its accent, or as "?", never dropped silently."""
    text = text.translate(_NO_DECOMPOSITION)
    out = []
    for char in text:
        try:
            char.encode("latin-1")
            out.append(char)
        except UnicodeEncodeError:
            base = unicodedata.normalize("NFKD", char).encode("latin-1", "ignore").decode()
            out.append(base or "?")
    return "".join(out)


def euros(cents: int) -> str:
    """French figures: 7 500,00 (a non-breaking space groups the thousands)."""
    units, rest = divmod(cents, 100)
    return f"{units:,}".replace(",", "\u00a0") + f",{rest:02d}"


def french_date(day: str) -> str:
    return date.fromisoformat(day).strftime("%d/%m/%Y")


class _Receipt(FPDF):
    def section(self, title: str) -> None:
        self.ln(3)
        self.set_font(FONT, "B", 11)
        self.set_fill_color(230, 230, 230)
        self.cell(0, 7, latin1(title), new_x="LMARGIN", new_y="NEXT", fill=True)
        self.set_font(FONT, "", 10)
        self.ln(1)

    def field(self, label: str, value: str) -> None:
        self.set_font(FONT, "B", 10)
        self.cell(55, 6, latin1(label))
        self.set_font(FONT, "", 10)
        self.multi_cell(0, 6, latin1(value), new_x="LMARGIN", new_y="NEXT")


def render_receipt(receipt: dict[str, Any]) -> bytes:
    issuer = receipt["issuer"]
    donor = receipt.get("donor") or {}
    pdf = _Receipt(format="A4")
    pdf.set_title(latin1(f"Reçu n° {receipt['number']}"))
    pdf.set_author(latin1(issuer["name"]))
    pdf.set_creator("Tribune")
    pdf.add_page()
    pdf.set_font(FONT, "B", 14)
    pdf.multi_cell(
        0,
        8,
        latin1("Reçu au titre des dons et cotisations versés à un parti politique"),
        align="C",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.set_font(FONT, "", 9)
    pdf.cell(
        0,
        5,
        latin1("Articles 200, 3 du code général des impôts - modèle CERFA n° 11580"),
        align="C",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.ln(2)
    pdf.set_font(FONT, "B", 12)
    pdf.cell(0, 8, latin1(f"Reçu n° {receipt['number']}"), new_x="LMARGIN", new_y="NEXT")
    if receipt["status"] == "cancelled":
        pdf.set_text_color(200, 0, 0)
        cancelled = receipt.get("cancellation") or {}
        note = f"ANNULÉ ({cancelled.get('kind', '')}: {cancelled.get('reason', '')})"
        if receipt.get("replaced_by"):
            note += " - remplacé par un nouveau reçu"
        pdf.multi_cell(0, 6, latin1(note), new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(0, 0, 0)
    if receipt.get("replaces"):
        pdf.set_font(FONT, "", 9)
        pdf.cell(
            0,
            5,
            latin1("Ce reçu annule et remplace un reçu précédent."),
            new_x="LMARGIN",
            new_y="NEXT",
        )

    pdf.section("Bénéficiaire des versements")
    pdf.field("Nom ou dénomination", issuer["name"])
    pdf.field("Adresse", issuer["address"])
    pdf.field("Objet", issuer["object"])
    if issuer.get("identifier"):
        pdf.field("SIREN / RNA", issuer["identifier"])
    pdf.field("Qualité", BENEFICIARY_LABELS.get(issuer["beneficiary_type"], ""))

    pdf.section("Donateur ou cotisant")
    name = " ".join(p for p in (donor.get("given_name"), donor.get("family_name")) if p)
    pdf.field("Nom et prénom", name or "(identité effacée ou non renseignée)")
    address = [*donor.get("address_lines", [])]
    town = " ".join(p for p in (donor.get("postcode"), donor.get("commune")) if p)
    if town:
        address.append(town)
    pdf.field("Adresse du domicile fiscal", "\n".join(address) or "(non renseignée)")

    pdf.section("Versement")
    amount = receipt["amount_cents"]
    currency = receipt.get("currency", "EUR")
    pdf.field("Montant", f"***{euros(amount)} {currency}***")
    pdf.field("Somme en toutes lettres", receipt["amount_words"])
    pdf.field("Date du versement", french_date(receipt["paid_on"]))
    nature = NATURE_LABELS.get(receipt["nature"], receipt["nature"])
    if receipt["nature"] == "dues" and receipt.get("elected_official"):
        nature += " d'élu"
    pdf.field("Nature", f"{nature} (numéraire)")
    pdf.field("Mode de versement", METHOD_LABELS.get(receipt["method"], receipt["method"]))

    pdf.ln(3)
    pdf.set_font(FONT, "", 9)
    percent = receipt.get("tax_reduction_percent", 66)
    reduction = tax_reduction_cents(amount, percent)
    pdf.multi_cell(
        0,
        5,
        latin1(
            "Le bénéficiaire certifie sur l'honneur que les dons et cotisations qu'il reçoit "
            "ouvrent droit à la réduction d'impôt prévue au 3 de l'article 200 du code "
            f"général des impôts : {percent} % des sommes versées (soit {euros(reduction)} "
            f"{currency} pour ce versement), dans la limite de 20 % du revenu imposable et de "
            "15 000 EUR par foyer fiscal pour les partis politiques."
        ),
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.ln(4)
    pdf.set_font(FONT, "", 10)
    issued = receipt["issued_at"]
    pdf.cell(
        0,
        6,
        latin1(f"Fait le {issued.strftime('%d/%m/%Y')} - {issuer['signatory']}"),
        new_x="LMARGIN",
        new_y="NEXT",
    )
    return bytes(pdf.output())
