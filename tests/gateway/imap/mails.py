"""Real mails for the IMAP tests, built from the public samples in ``tests/samples``.

``lab_report`` is what a laboratory mails a patient: a text and HTML
alternative (French, quoted-printable), the ``IHE_XDM.zip`` of the Direct
Project sample, a CDA R2 report (ANS test sample) as an XML attachment, and a
forwarded ``message/rfc822`` (the Direct Project MDN sample, itself a
``multipart/report``). Part numbers, as IMAP clients address them::

    1      multipart/alternative
    1.1    text/plain (quoted-printable)
    1.2    text/html  (quoted-printable)
    2      application/zip  IHE_XDM.zip (base64)
    3      text/xml         CDA (base64)
    4      message/rfc822
    4.1    text/plain           (inside the attached multipart/report)
    4.2    message/disposition-notification
"""

from __future__ import annotations

from email.message import EmailMessage
from email.policy import SMTP

from tests.harness.paths import SAMPLES

XDM = SAMPLES / "DirectProject-nhin-d" / "samplexdm-xdmail.zip"
CDA = SAMPLES / "ansforge-TestContenuCDA-3-0" / "ExemplesCDA" / "BIO-CR-BIO_2024.01_TSH_1.xml"
MDN = SAMPLES / "DirectProject-nhin-d" / "MDN.eml"

TEXT = "Bonjour,\nvoici vos résultats d'analyse (TSH).\nCordialement,\nLe laboratoire\n"
HTML = "<p>Bonjour,<br>voici vos <b>résultats</b> d'analyse (TSH).</p>\n"


def forwarded_mdn() -> bytes:
    """The Direct Project MDN sample with its BOM removed and CRLF line ends."""
    raw = MDN.read_bytes().removeprefix(b"\xef\xbb\xbf")
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def lab_report() -> EmailMessage:
    """The four-part report described in the module docstring (headers From/To/… unset)."""
    message = EmailMessage(policy=SMTP)
    message.set_content(TEXT, cte="quoted-printable")
    message.add_alternative(HTML, subtype="html", cte="quoted-printable")
    message.make_mixed()
    message.add_attachment(
        XDM.read_bytes(), maintype="application", subtype="zip", filename="IHE_XDM.zip"
    )
    message.add_attachment(
        CDA.read_bytes(), maintype="text", subtype="xml", filename=CDA.name, cte="base64"
    )
    forwarded = EmailMessage(policy=SMTP)
    forwarded["Content-Type"] = "message/rfc822"
    forwarded["Content-Disposition"] = "attachment"
    forwarded.set_payload(forwarded_mdn().decode("ascii"))
    message.attach(forwarded)
    return message
