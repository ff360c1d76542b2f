"""Reading scans: files to page images (raster), a page to its code and box (scan), OCR, on-screen forms, a file to outcomes (reader)."""
