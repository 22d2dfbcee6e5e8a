"""Tables (CSV, Markdown, LaTeX) and figures of the paper's layout."""
