"""What the paper channel prints: the form's geometry, fonts, the form, the answer letter, and what a form shows."""
