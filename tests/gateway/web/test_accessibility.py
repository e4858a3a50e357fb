"""WCAG 2.1 A and AA on every page of the webmail, in French and in English (H2).

axe-core (axe-playwright-python) runs in Debian's Chromium on each page of the slice —
sign-in, conversation list (empty and full), the new-message page (with its form, and with
nobody to write to), a conversation with its reply form, a conversation whose reply is not
allowed, the sessions page, an error page — at desktop width and at a phone's 360 px,
where nothing may scroll sideways.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe

from tests.gateway.web.test_activation import new_space
from tests.harness.browser import BIRTH, activated_patient, base_url, professional_writes
from tests.harness.served import ServedGateway
from tests.harness.waiting import wait_until

WCAG = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}
AXE = Axe()


@pytest.fixture
def served(working_gateway: ServedGateway) -> ServedGateway:
    """The harness's served demo home whose workers run (filing releases the patient's copy)."""
    return working_gateway


def _violations(page: Any) -> list[str]:
    results = AXE.run(page, options=WCAG)
    return [
        f"{item['id']}: {item['help']} ({len(item['nodes'])} nodes: "
        f"{[node['target'] for node in item['nodes']][:3]})"
        for item in results.response["violations"]
    ]


@pytest.mark.parametrize("language", ["fr", "en"])
@pytest.mark.parametrize("width", [1280, 360])
def test_H2_no_wcag_21_aa_violation_on_any_page(
    served: ServedGateway, chromium: Any, language: str, width: int
) -> None:
    context = chromium.new_context(
        locale="fr-FR" if language == "fr" else "en-GB",
        viewport={"width": width, "height": 800},
    )
    context.set_default_timeout(20_000)
    try:
        page = context.new_page()
        base = base_url(served)
        patient = activated_patient(served)
        problems: dict[str, list[str]] = {}

        def check(name: str) -> None:
            page.wait_for_load_state()
            assert page.evaluate("document.documentElement.lang") == language, name
            found = _violations(page)
            if found:
                problems[name] = found
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            if overflow > 0:
                problems.setdefault(name, []).append(f"scrolls sideways by {overflow} px")

        page.goto(base + "/webmail/sign-in")
        check("sign-in")
        # H4b: activation (before signing in)
        address, code = new_space(served)
        page.goto(base + "/webmail/activate")
        check("activation")
        page.locator("#address").fill(address)
        page.locator("#code").fill(code)
        page.locator("#birth_date").fill(BIRTH.isoformat())
        page.locator("form[action='/webmail/activate'] button").click()
        page.wait_for_selector("#totp-secret")
        check("activation, password and authenticator")
        page.goto(base + "/webmail/sign-in")
        page.get_by_label(re.compile("adresse|address", re.I)).first.fill(patient.address)
        page.locator("#password").fill(patient.password)
        page.locator("#code").fill(patient.code())
        page.locator("form[action='/webmail/sign-in'] button").click()
        page.wait_for_url(re.compile(r"/webmail/conversations$"))
        check("empty list")
        page.goto(base + "/webmail/new")
        check("new message, nobody to write to")
        professional_writes(
            served,
            patient.address,
            "Compte rendu",
            "Bonjour,\nvoici le compte rendu.\n",
            attachment=("note.txt", b"note\n", "text/plain"),
        )
        page.goto(base + "/webmail/conversations")
        wait_until(
            lambda: page.reload() and page.locator(".conversation").count() == 1,
            timeout=30,
            message="the first message never showed",
        )
        page.goto(base + "/webmail/new")
        assert page.locator("select#to option").count() == 1
        check("new message")
        page.locator("#subject").fill("Question")
        page.locator("#body").fill("Bonjour.")
        page.locator("form[action='/webmail/compose/new'] button[value=send]").click()
        page.wait_for_url(re.compile(r"/webmail/conversations\?sent=1$"))
        check("list, message sent")
        professional_writes(served, patient.address, "Fin", "Bonjour.\n", end_exchange=True)
        wait_until(
            lambda: page.reload() and page.locator(".conversation").count() == 2,
            timeout=30,
            message="the two messages never showed",
        )
        check("list")
        page.locator(".conversation", has_text="Compte rendu").get_by_role("link").click()
        page.wait_for_url(re.compile(r"/webmail/conversations/\d+$"))
        check("conversation")
        page.goto(base + "/webmail/conversations")
        page.locator(".conversation", has_text="Fin").get_by_role("link").click()
        page.wait_for_url(re.compile(r"/webmail/conversations/\d+$"))
        check("conversation ended")
        page.goto(base + "/webmail/sessions")
        check("sessions")
        # H4a: documents and privacy pages
        page.goto(base + "/webmail/conversations")
        page.locator(".conversation", has_text="Compte rendu").get_by_role("link").click()
        page.locator("a[href^='/webmail/documents/from-message/']").first.click()
        page.wait_for_url(re.compile(r"/webmail/documents/from-message/\d+/\d+$"))
        check("save an attachment")
        wait_until(
            lambda: page.goto(base + "/webmail/documents") and page.locator(".document").count(),
            timeout=30,
            message="the attachment was never filed",
        )
        check("documents")
        page.locator(".document a").first.click()
        page.wait_for_url(re.compile(r"/webmail/documents/[0-9a-f]{32}$"))
        check("a document")
        page.get_by_role(
            "link", name=re.compile("Envoyer à un professionnel|Send to a health")
        ).click()
        page.wait_for_url(re.compile(r"/webmail/documents/[0-9a-f]{32}/send$"))
        check("send a document")
        page.goto(base + "/webmail/documents/add")
        check("add a document")
        page.goto(base + "/webmail/privacy")
        check("access management")
        page.goto(base + "/webmail/privacy/history")
        check("history")
        wait_until(
            lambda: (
                page.goto(base + "/webmail/notifications") and page.locator(".notification").count()
            ),
            timeout=30,
            message="the notification centre stayed empty",
        )
        check("notifications")
        page.goto(base + "/webmail/notifications/preferences")
        check("notification preferences")
        page.goto(base + "/webmail/profiles")
        check("profiles")
        # H4b: writing, drafts, pharmacies, account
        page.goto(base + "/webmail/drafts")
        check("no draft")
        page.goto(base + "/webmail/pharmacies?q=zzzz")
        check("pharmacies, none found")
        page.goto(base + "/webmail/pharmacies?q=pharmacie")
        check("pharmacies")
        page.locator("form[action='/webmail/pharmacies'][method=post] button").first.click()
        page.wait_for_url(re.compile(r"/webmail/new$"))
        check("new message with files")
        page.locator("#subject").fill("Brouillon")
        page.locator("button[value=draft]").click()
        page.wait_for_url(re.compile(r"/webmail/drafts\?saved=1$"))
        check("drafts")
        with page.expect_navigation():
            page.locator(".draft a").first.click()
        check("a resumed draft")
        page.goto(base + "/webmail/conversations")
        page.locator(".conversation", has_text="Compte rendu").get_by_role("link").click()
        with page.expect_navigation():
            page.locator("a[href$='/delete']").click()
        check("delete a conversation")
        page.goto(base + "/webmail/account")
        check("account")
        page.locator("#label").fill("Thunderbird")
        page.locator("form[action='/webmail/account/app-passwords'] button").click()
        page.wait_for_selector("#new-app-password")
        check("account, new app password")
        page.goto(base + "/webmail/account/close")
        check("close")
        page.goto(base + "/webmail/closed")
        check("closed")
        page.goto(base + "/webmail/reopen")
        check("reopen")
        page.goto(base + "/webmail/conversations/999999999")
        check("not found")
        assert problems == {}, problems
    finally:
        context.close()
