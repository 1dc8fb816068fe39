pytest_plugins = ["pytester"]


def readme_block(marker: str) -> str:
    """The fenced code block that follows ``<!-- marker -->`` in README.md."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    match = re.search(rf"<!-- {re.escape(marker)} -->\s*```\w*\n(.*?)```", readme, re.S)
    assert match, f"README has no block marked {marker!r}"
    return match.group(1)
