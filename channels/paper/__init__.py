"""The paper channel: pre-filled forms out, scanned forms in, answers as letters.

| module | job |
|---|---|
| ``settings`` | the ``[paper]`` config section |
| ``code`` | the signed 2D code: fields, compact packing, HMAC check (forged / altered) |
| ``layout`` | the geometry of the form (DIN 5008 form B), shared by printer and scanner |
| ``fonts`` | fonts for the PDFs |
| ``spec`` | what a form shows, from the knowledge base and a case (one implementation for every entry point) |
| ``form`` | the form as PDF (reportlab, AcroForm fields, the code) |
| ``raster`` | scan files to page images within limits (poppler, Pillow) |
| ``scan`` | one page: find the code, map the page, cut out and binarise the concern box |
| ``ocr`` | Tesseract on the box: text and confidence |
| ``pdfform`` | a form completed on screen: its AcroForm values (pypdf) |
| ``reader`` | a scan file to one outcome a page (accepted or rejected with a reason) |
| ``request`` | an accepted page to the queue's InboundRequest |
| ``letter`` | an answer as a DIN 5008 letter PDF |
"""
