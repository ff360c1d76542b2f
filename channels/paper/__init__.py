"""The paper channel: pre-filled forms out, scanned forms in, answers as letters.

| module | job |
|---|---|
| ``settings`` | the ``[paper]`` config section |
| ``code`` | the signed 2D code: fields, compact packing, HMAC check (forged / altered) |
| ``forms.layout`` | the geometry of the form (DIN 5008 form B), shared by printer and scanner |
| ``forms.fonts`` | fonts for the PDFs |
| ``forms.spec`` | what a form shows, from the knowledge base and a case (one implementation for every entry point) |
| ``forms.form`` | the form as PDF (reportlab, AcroForm fields, the code) |
| ``scans.raster`` | scan files to page images within limits (poppler, Pillow) |
| ``scans.scan`` | one page: find the code, map the page, cut out and binarise the concern box |
| ``scans.ocr`` | Tesseract on the box: text and confidence |
| ``scans.pdfform`` | a form completed on screen: its AcroForm values (pypdf) |
| ``scans.reader`` | a scan file to one outcome a page (accepted or rejected with a reason) |
| ``request`` | an accepted page to the queue's InboundRequest |
| ``forms.letter`` | an answer as a DIN 5008 letter PDF |
| ``store`` | the review queue's table and the scan files |
| ``ingest`` | a scan file into the queue: one implementation for the CLI, the inbox watcher and the API |
| ``outbound`` | the ``letter`` adapter: answers on paper into the print folder, never twice |
| ``cli``, ``http``, ``review`` | ``citizen-hub paper …``; the API routes; the console's review queue |
"""

from channels.paper.settings import PaperSettings
from hub.plugins import Channel, SettingsSection

CHANNEL = Channel(
    name="paper",
    settings=(SettingsSection("paper", PaperSettings, "Paper channel: form code key, print folder, scan limits, OCR."),),
    routes="channels.paper.http:setup",
    commands="channels.paper.cli:register",
    outbound={"paper": "channels.paper.outbound:build_letter_adapter"},
    privacy="channels.paper.store:PRIVACY",  # scanned pages: their rows and files
    openapi="channels.paper.openapi:OPERATIONS",
)
