"""The guides' snippets are tested (they were the README's, issue 10 item 6; issue 17 moved them into the guides with
their checks): their Python snippets run, and every ``engine.state`` attribute, TensorBoard tag and argument name
they show is checked against what the code publishes.

The guides covered are ``docs/guides/attach.md`` ("Attach to your own engine"), ``docs/guides/metrics.md``
("Metrics and monitoring") and ``docs/guides/dcgan.md`` ("A complete example"). Their snippets run in order: the
first guide's in one namespace, the metrics guide's continuing it (blocks preceded by the ``CHECK_ONLY`` marker need
the paper network's weights and are checked, not run), the complete example in its own. The names checked are
parsed from the guides' text, so an edit that names something the code does not publish fails here:

- ``engine.state.X`` / ``trainer.state.X``, ``state.metrics["k"]``, ``state.protocols["k"]`` and
  ``.protocols["k"]`` anywhere in those guides must exist on one of the engines the snippets ran;
- TensorBoard tags (backticked ``a/b`` tokens, and tokens marked ``(image)`` or ``(text)``) must be in the event
  files the snippets wrote; the TensorBoard section's list must be exactly what its snippet logs;
- every keyword argument of a call in a snippet or in inline code must be a parameter of the function it calls
  (resolved through the snippets' imports and objects); a bare ``name=`` in the prose must be a parameter of a
  callable of the same section;
- the handler table of "Attach to your own engine" (event, published attributes, refusals) is replayed.

The other guides' Python blocks run in ``tests/test_docs.py``.
"""
from __future__ import annotations

import ast
import builtins
import contextlib
import importlib
import inspect
import io
import os
import re
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import pytest
import torch
from ignite.engine import Engine, Events
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO_ROOT = Path(__file__).resolve().parents[1]
GUIDES_DIR = REPO_ROOT / "docs" / "guides"
ATTACH = "# Attach to your own engine"
METRICS = "# Metrics and monitoring"
EXAMPLE = "# A complete example: DCGAN with IS and FID every epoch"
TENSORBOARD = "## TensorBoard"
#: Each checked guide, by its title (the page's first line).
GUIDES = {ATTACH: GUIDES_DIR / "attach.md", METRICS: GUIDES_DIR / "metrics.md", EXAMPLE: GUIDES_DIR / "dcgan.md"}
CHECKED_SECTIONS = (ATTACH, METRICS, EXAMPLE)
#: A line just before a ```python fence that marks the block as checked but not run.
CHECK_ONLY = "<!-- tests/test_guide_snippets.py checks this block's names and arguments but does not run it"

#: Where a name in a guide without an import comes from (inline code such as `InceptionScore(extractor=...)`).
PUBLIC_MODULES = (
    "ignite_igan.metrics", "ignite_igan.handlers", "ignite_igan.logging", "ignite_igan.functional", "ignite_igan.nn",
    "ignite_igan.models", "ignite.handlers", "ignite.engine", "torch.utils.data",
)

TAG = re.compile(r"^[A-Za-z_]\w*(?:/\w+)+$")
STATE_ATTRIBUTE = re.compile(r"\b(?:engine|trainer)\.state\.([A-Za-z_]\w*)\b(?!\()")
STATE_KEY = re.compile(r"\.(metrics|protocols)\[\s*[\"']([^\"']+)[\"']\s*\]")
KEYWORD_MENTION = re.compile(r"(?<![=!<>\w.])([A-Za-z_]\w*)=(?!=)")


# ---------------------------------------------------------------------------------------------------------------
# Parsing the guides
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Block:
    code: str
    runnable: bool
    subsection: str


def _section_lines(text: str, heading: str) -> List[str]:
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == heading)
    except StopIteration:
        raise AssertionError(f"no guide has the line {heading!r}") from None
    level = len(heading) - len(heading.lstrip("#"))
    end = len(lines)
    in_code = False
    for i in range(start + 1, len(lines)):
        if lines[i].startswith("```"):
            in_code = not in_code
        match = None if in_code else re.match(r"^(#+)\s", lines[i])
        if match and len(match.group(1)) <= level:
            end = i
            break
    return lines[start:end]


def section_text(text: str, heading: str) -> str:
    """The section under ``heading``, up to the next heading of the same or a higher level."""
    return "\n".join(_section_lines(text, heading))


def section_code_blocks(text: str, heading: str) -> List[str]:
    """The ```python blocks between ``heading`` and the next heading of the same or a higher level."""
    return [block.code for block in section_blocks(text, heading)]


def section_blocks(text: str, heading: str) -> List[Block]:
    """The ```python blocks of a section, each with its CHECK_ONLY flag and the (sub)section heading above it."""
    lines = _section_lines(text, heading)
    blocks: List[Block] = []
    subsection = heading
    i = 0
    while i < len(lines):
        line = lines[i]
        if re.match(r"^#+\s", line):
            subsection = line.strip()
        if line.startswith("```python"):
            runnable = not (i > 0 and lines[i - 1].startswith(CHECK_ONLY))
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            blocks.append(Block("\n".join(lines[i + 1 : end]) + "\n", runnable, subsection))
            i = end
        elif line.startswith("```"):
            i = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        i += 1
    return blocks


def subsections(text: str, heading: str) -> Dict[str, str]:
    """``{heading: prose}`` of the section and of each of its subsections (one level down), code blocks removed."""
    result: Dict[str, List[str]] = {heading: []}
    current = heading
    in_code = False
    below = "#" * (len(heading) - len(heading.lstrip("#")) + 1)
    for line in _section_lines(text, heading)[1:]:
        if line.startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            continue
        if re.match(rf"^{below}\s", line):
            current = line.strip()
            result[current] = []
            continue
        result[current].append(line)
    return {key: "\n".join(value) for key, value in result.items()}


def inline_code(prose: str) -> List[str]:
    """The `...` spans of Markdown prose (table cells included), except those that name the reference code's own
    arguments ("the reference's `deterministic=True`")."""
    return [m.group(1) for m in re.finditer(r"`([^`\n]+)`", prose)
            if not re.search(r"reference's\s+$", prose[max(0, m.start() - 20) : m.start()])]


def tags_named(prose: str) -> Set[Tuple[str, str]]:
    """``{(kind, tag)}`` for the TensorBoard tags a text names: `a/b` tokens, and `x` (image) / `x` (text)."""
    tags = set()
    for match in re.finditer(r"`([^`\n]+)`(\s*\((image|text)\))?", prose):
        token, kind = match.group(1), match.group(3)
        if TAG.match(token) or (kind and re.match(r"^[A-Za-z_]\w*$", token)):
            tags.add((kind or "any", token))
    # a list item "`a`, `b` (text): ..." gives its kind to every tag before the colon
    for item in re.findall(r"^- (.*?):", prose, flags=re.M):
        kind = re.search(r"\((image|text)\)", item)
        if kind:
            for token in re.findall(r"`([^`]+)`", item):
                if TAG.match(token):
                    tags.discard(("any", token))
                    tags.add((kind.group(1), token))
    return tags


def guides() -> str:
    """The checked guides, one after the other: each starts with its title, which ends the previous section."""
    return "\n".join(path.read_text(encoding="utf-8") for path in GUIDES.values())


def test_section_parser_stops_at_the_next_heading():
    text = (
        "# T\n## A\n```python\nx = 1\n# a comment, not a heading\n```\n### sub\n```python\ny = 2\n```\n"
        "## B\n```python\nz = 3\n```\n"
    )
    assert section_code_blocks(text, "## A") == ["x = 1\n# a comment, not a heading\n", "y = 2\n"]
    marked = text.replace("### sub\n", f"### sub\n{CHECK_ONLY} -->\n")
    assert [(b.runnable, b.subsection) for b in section_blocks(marked, "## A")] == [(True, "## A"), (False, "### sub")]


def test_tag_parser():
    prose = (
        "- `training/errD`, `d/lr/group_0`: scalars;\n- `samples/is/protocol` (text): cards;\n"
        "- `generated` (image): a grid; not `<evaluator>/<metric>`, `runs/`, `docs/x.md` or `a b/c`\n"
    )
    assert tags_named(prose) == {("any", "training/errD"), ("any", "d/lr/group_0"), ("text", "samples/is/protocol"),
                                 ("image", "generated")}


# ---------------------------------------------------------------------------------------------------------------
# Running the snippets
# ---------------------------------------------------------------------------------------------------------------
def run_blocks(blocks: List[Block], namespace: Dict[str, Any], label: str) -> None:
    for index, block in enumerate(blocks):
        if not block.runnable:
            continue
        code = compile(block.code, f"{GUIDES[label].name}[python block {index}]", "exec")
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                exec(code, namespace)
        except Exception as error:  # pragma: no cover - the message names the failing block
            pytest.fail(f"python block {index} of {label!r} ({block.subsection}) failed: {error!r}\n{block.code}")


def read_tags(log_dir: Path) -> Set[Tuple[str, str]]:
    """``{(kind, tag)}`` of the event files in ``log_dir``; text tags without TensorBoard's ``/text_summary``."""
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    found = {("scalar", t) for t in tags["scalars"]} | {("image", t) for t in tags["images"]}
    found |= {("text", t[: -len("/text_summary")]) for t in tags["tensors"] if t.endswith("/text_summary")}
    return found


def log_dir_of(block: Block) -> str:
    """The first argument of the block's ``attach_tensorboard(...)`` call."""
    for node in ast.walk(ast.parse(block.code)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "attach_tensorboard":
            return ast.literal_eval(node.args[0])
    raise AssertionError(f"no attach_tensorboard call in\n{block.code}")


def split_before_run(code: str) -> str:
    """The part of a block before its first top-level ``trainer.run(...)``: the set-up a resumed process repeats."""
    tree = ast.parse(code)
    for node in tree.body:
        if (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
                and ast.unparse(node.value.func) == "trainer.run"):
            return "\n".join(code.splitlines()[: node.lineno - 1]) + "\n"
    raise AssertionError(f"no top-level trainer.run(...) in\n{code}")


@dataclass
class Runs:
    tmp: Path
    attach: Dict[str, Any]  # the "Attach to your own engine" section, then "Metrics and monitoring"
    after_attach: Dict[str, Any]  # what the attach section left, before the metrics section continued it
    example: Dict[str, Any]
    resumed: Dict[str, Any]
    resume_warnings: List[str]
    engines: List[Engine]
    callables: Engine  # the handler table replayed: every handler registered as a callable
    rows: List[Dict[str, Any]]
    tags: Dict[str, Set[Tuple[str, str]]]  # section heading -> logged tags


@contextlib.contextmanager
def working_directory_and_torch_home(path: Path) -> Iterator[None]:
    saved_cwd, saved_home, saved_hub = os.getcwd(), os.environ.get("TORCH_HOME"), torch.hub._hub_dir
    os.chdir(path)
    os.environ["TORCH_HOME"] = str(path / "torch_home")  # FID's default statistics cache goes there
    torch.hub._hub_dir = None  # so that TORCH_HOME decides, whatever torch.hub.set_dir was called with before
    try:
        yield
    finally:
        torch.hub._hub_dir = saved_hub
        os.chdir(saved_cwd)
        if saved_home is None:
            os.environ.pop("TORCH_HOME", None)
        else:
            os.environ["TORCH_HOME"] = saved_home


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    tmp = tmp_path_factory.mktemp("guides")
    text = guides()
    with working_directory_and_torch_home(tmp):
        attach: Dict[str, Any] = {"__name__": "readme_snippets"}
        run_blocks(section_blocks(text, ATTACH), attach, ATTACH)
        trainer = attach["trainer"]
        after_attach = {
            "epoch": trainer.state.epoch, "iteration": trainer.state.iteration,
            "real_target": trainer.state.real_target,
            "historical_penalty_D": float(trainer.state.historical_penalty_D),
            "historical_penalty_G": float(trainer.state.historical_penalty_G),
            "averaged_real_score": trainer.state.averaged_real_score,
            "init_done": attach["init_G"].done and attach["init_D"].done,
            "reference_set": torch.equal(attach["netG"].reference_noise, attach["reference"].reference),
            "checkpoints": sorted(p.name for p in (tmp / "checkpoints").iterdir()),
        }
        run_blocks(section_blocks(text, METRICS), attach, METRICS)

        example_blocks = section_blocks(text, EXAMPLE)
        example: Dict[str, Any] = {"__name__": "readme_example"}
        run_blocks(example_blocks, example, EXAMPLE)
        # "To resume, a new process builds the same objects and, before trainer.run, calls Checkpoint.load_objects"
        resumed: Dict[str, Any] = {"__name__": "readme_example"}  # a new process of the same script
        (setup,) = [block.code for block in example_blocks if block.runnable]
        exec(compile(split_before_run(setup), "dcgan.md[set-up]", "exec"), resumed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            resumed["Checkpoint"].load_objects(to_load=resumed["to_save"],
                                               checkpoint=example["checkpoint"].last_checkpoint)
            resumed["trainer"].run(resumed["loader"], max_epochs=3)
            resumed["logger"].close()

        callables, rows = run_handler_table(text)

    engines = [attach["trainer"], attach["scorer"].engine, example["trainer"], resumed["trainer"], callables]
    engines += [scorer.engine for ns in (example, resumed) for scorer in ns["scorers"].values()]
    metrics_blocks = section_blocks(text, METRICS)
    tensorboard_block = next(b for b in metrics_blocks if b.subsection == TENSORBOARD and b.runnable)
    example_block = next(b for b in example_blocks if b.runnable)
    tags = {
        METRICS: read_tags(tmp / log_dir_of(tensorboard_block)),
        EXAMPLE: read_tags(tmp / log_dir_of(example_block)),
    }
    return Runs(tmp, attach, after_attach, example, resumed, [str(w.message) for w in caught], engines, callables,
                rows, tags)


# ---------------------------------------------------------------------------------------------------------------
# 1. The snippets run and do what the prose says
# ---------------------------------------------------------------------------------------------------------------
def test_attach_snippets_run(runs):
    assert len(section_blocks(guides(), ATTACH)) >= 6, "expected the engine and one snippet per handler"
    state = runs.after_attach
    assert state["epoch"] == 3 and state["iteration"] == 12
    assert 0.9 <= state["real_target"] <= 1.0
    assert state["historical_penalty_D"] > 0 and state["historical_penalty_G"] > 0
    assert type(state["averaged_real_score"]) is float  # the snippet's .item(): a number, not a tensor
    assert state["init_done"] and state["reference_set"]
    assert state["checkpoints"]


def test_metrics_snippets_run_and_score_every_epoch(runs):
    scorer = runs.attach["scorer"]  # "FID (and IS) with your own classifier"
    metrics = scorer.engine.state.metrics
    assert set(metrics) == {"is", "is_std", "fid"} and all(type(v) is float for v in metrics.values())
    assert runs.attach["trainer"].state.epoch == 4  # the TensorBoard snippet's extra epoch, scored at its end
    card = scorer.protocols["fid"]
    assert card.n_samples == scorer.n_samples and card.allow_tf32 is False
    assert card.network.startswith("ClassifierExtractor(Classifier") and str(card).endswith(f"card {card.digest}")


def test_complete_example_scores_every_epoch_and_resumes(runs):
    example, resumed = runs.example, runs.resumed
    assert example["trainer"].state.epoch == 2 and resumed["trainer"].state.epoch == 3
    assert resumed["trainer"].state.iteration == 3 * len(resumed["loader"])
    for namespace in (example, resumed):
        for scorer in namespace["scorers"].values():
            assert set(scorer.engine.state.metrics) == {"is", "is_std", "fid"}
            assert set(scorer.protocols) == {"is", "fid"}
    handlers, first = resumed["handlers"], example["handlers"]
    assert torch.equal(handlers["reference"].reference, first["reference"].reference)
    assert handlers["init_G"].done and handlers["init_D"].done
    assert handlers["averaging"].num_updates == 3 * len(resumed["loader"])
    assert not [w for w in runs.resume_warnings if "DataDependentInitialization" in w]
    # the real statistics: computed once, cached under their name, loaded by the second FID and by the new process
    cache = sorted((runs.tmp / "torch_home" / "ignite_igan" / "fid_statistics").iterdir())
    assert len(cache) == 1 and cache[0].name.startswith("fid_my_images_")
    for namespace in (example, resumed):
        sources = {s.protocols["fid"].real_statistics for s in namespace["scorers"].values()}
        assert len(sources) == 1 and sources.pop().startswith("my_images, 160 images, key ")


def run_handler_table(text: str) -> Tuple[Engine, List[Dict[str, Any]]]:
    """Replays the table of "`attach` or `add_event_handler`" on a fresh copy of the section's engine: every handler
    registered as a callable with the event the table names. Returns the engine, after one epoch, and the rows."""
    rows = handler_table(text)
    namespace: Dict[str, Any] = {"__name__": "readme_callables"}
    first = section_blocks(text, ATTACH)[0]
    exec(compile(first.code, "attach.md[python block 0]", "exec"), namespace)
    trainer: Engine = namespace["trainer"]
    for row in rows:
        handler = make_handler(row["class"], namespace)
        trainer.add_event_handler(getattr(Events, row["event"]), handler)
        row["handler"] = handler
    trainer.run(namespace["data"], max_epochs=1)
    return trainer, rows


def handler_table(text: str) -> List[Dict[str, Any]]:
    rows = []
    for line in section_text(text, ATTACH).splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        # the handler's name, as code (`Name`) or as a link to its API page ({class}`~ignite_igan.handlers.Name`)
        name = re.fullmatch(r"(?:\{class\})?`~?(?:[\w.]+\.)?(\w+)`", cells[0]) if len(cells) == 3 else None
        if not name or "add_event_handler" not in cells[1]:
            continue
        registration = re.search(r"trainer\.add_event_handler\(Events\.(\w+), (\w+)\)", cells[1])
        assert registration, f"no trainer.add_event_handler(Events.X, handler) in the row {line!r}"
        rows.append({
            "class": name.group(1),
            "event": registration.group(1),
            "published": STATE_ATTRIBUTE.findall(cells[1]),
            "attach_adds": cells[2],
        })
    return rows


def make_handler(name: str, ns: Dict[str, Any]) -> Any:
    """A handler of class ``name`` for the section's engine (the constructor arguments the section uses)."""
    from ignite_igan import handlers

    cls = getattr(handlers, name)
    arguments = {
        "OneSidedLabelSmoothing": lambda: cls(real_target=0.9),
        "HistoricalAveraging": lambda: cls(ns["netD"], weight=1e-3, optimizer=ns["optimizerD"]),
        "EvaluationAveraging": lambda: cls(ns["netD"], rate=1e-4),
        "VirtualBatchReference": lambda: cls(ns["netG"], size=16, seed=0),
        "DataDependentInitialization": lambda: cls(ns["netD"], torch.cat(ns["data"])[:500]),
    }
    return arguments[name]()


def test_handlers_registered_as_callables_do_what_the_table_says(runs):
    text = guides()
    trainer, rows = runs.callables, runs.rows
    assert {row["class"] for row in rows} == {
        "OneSidedLabelSmoothing", "HistoricalAveraging", "EvaluationAveraging", "VirtualBatchReference",
        "DataDependentInitialization",
    }
    for row in rows:
        for attribute in row["published"]:
            assert hasattr(trainer.state, attribute), (row["class"], attribute)
        handler = row["handler"]
        # "Registering it twice with one engine raises a ValueError: ... attach and add_event_handler"
        with pytest.raises(ValueError, match="registered as an event handler"):
            handler.attach(trainer)
        if "name=" in row["attach_adds"]:
            assert "name" in inspect.signature(handler.attach).parameters, row["class"]
        else:
            assert row["attach_adds"] == "nothing", row
    assert not hasattr(trainer.state, "historical_penalty_D")  # the callable uses the default name

    # "two attach calls" and "a second engine", class by class as the prose sorts them
    paragraph = next(p for p in section_text(text, ATTACH).split("\n\n") if "refuse a second engine" in p)
    sentences = re.split(r"(?<=\.)\s+", paragraph.replace("\n", " "))
    one_engine = {t for s in sentences if "refuse a second engine" in s for t in re.findall(r"`(\w+)`", s)}
    several = {t for s in sentences if "may serve several engines" in s for t in re.findall(r"`(\w+)`", s)}
    assert one_engine | several == {row["class"] for row in rows} and not one_engine & several
    namespace: Dict[str, Any] = {}
    exec(compile(section_blocks(text, ATTACH)[0].code, "attach.md[python block 0]", "exec"), namespace)
    for name in one_engine | several:
        handler = make_handler(name, namespace)
        engine, other = Engine(lambda e, b: None), Engine(lambda e, b: None)
        handler.attach(engine)
        with pytest.raises(ValueError, match="already"):
            handler.attach(engine)
        if name in one_engine:
            with pytest.raises(ValueError, match="already|one engine"):
                handler.attach(other)
        else:
            handler.attach(other)


# ---------------------------------------------------------------------------------------------------------------
# 2. Every state attribute and TensorBoard tag the guides name is published
# ---------------------------------------------------------------------------------------------------------------
def test_state_attributes_and_metric_names_in_the_guides_exist(runs):
    text = "\n".join(section_text(guides(), heading) for heading in CHECKED_SECTIONS)
    attributes = set(STATE_ATTRIBUTE.findall(text))
    keys = set(STATE_KEY.findall(text))
    assert {"real_target", "historical_penalty", "ema_momentum", "metrics", "protocols"} <= attributes  # the parser works
    assert ("metrics", "is_std") in keys and ("protocols", "fid") in keys
    published = set().union(*(vars(engine.state) for engine in runs.engines))
    missing = sorted(attributes - published)
    assert not missing, f"the guides name engine.state attributes that no engine of its snippets has: {missing}"
    for kind, key in sorted(keys):
        assert any(key in (getattr(engine.state, kind, None) or {}) for engine in runs.engines), (kind, key)
    # state_attributes=[...] of every attach_tensorboard call: on the trainer that call logs
    for heading, namespace in ((ATTACH, runs.attach), (METRICS, runs.attach), (EXAMPLE, runs.example)):
        for block in section_blocks(guides(), heading):
            for node in ast.walk(ast.parse(block.code)):
                for keyword in getattr(node, "keywords", []):
                    if keyword.arg == "state_attributes":
                        for name in ast.literal_eval(keyword.value):
                            assert hasattr(namespace["trainer"].state, name), (heading, name)


def test_tensorboard_tags_in_the_guides_are_logged(runs):
    text = guides()
    logged = runs.tags[METRICS]
    listed = tags_named(subsections(text, METRICS)[TENSORBOARD])
    # the TensorBoard subsection lists exactly what its snippet logs
    assert {tag for _, tag in listed} == {tag for _, tag in logged}
    for kind, tag in listed:
        assert (kind, tag) in logged or (kind == "any" and ("scalar", tag) in logged), (kind, tag)
    for heading, tags in ((METRICS, logged), (EXAMPLE, runs.tags[EXAMPLE])):
        names = set().union(*(tags_named(prose) for prose in subsections(text, heading).values()))
        assert names, heading
        for kind, tag in sorted(names):
            candidates = {("scalar", tag), ("image", tag), ("text", tag)} if kind == "any" else {(kind, tag)}
            assert candidates & tags, f"{heading}: TensorBoard tag {tag!r} ({kind}) is not in the event files"
    example = {tag for _, tag in runs.tags[EXAMPLE]}
    assert {"samples/is", "samples/fid", "samples_ema/fid", "samples/fid/protocol", "generated"} <= example


# ---------------------------------------------------------------------------------------------------------------
# 3. Every argument name the guides show exists
# ---------------------------------------------------------------------------------------------------------------
def public_names() -> Dict[str, Any]:
    names: Dict[str, Any] = {}
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        names.update({k: v for k, v in vars(module).items() if not k.startswith("_")})
    return names


class Resolver:
    """Finds the object a call in a snippet calls: names from the snippet's imports and assignments, the namespace
    the snippets ran in, the package's public names and builtins; attributes, constant subscripts of mappings, and
    the class a constructor or an annotated function returns."""

    def __init__(self, namespace: Dict[str, Any]) -> None:
        self.namespace = {**public_names(), **namespace}
        self.assigned: Dict[str, Any] = {}

    def learn(self, tree: ast.AST) -> None:
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                module = importlib.import_module(node.module)
                for alias in node.names:
                    self.assigned[alias.asname or alias.name] = getattr(module, alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    importlib.import_module(alias.name)
                    bound = alias.name if alias.asname else alias.name.split(".")[0]
                    self.assigned[alias.asname or bound] = importlib.import_module(bound)
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                returned = self.returns(node.value)
                for target in node.targets:
                    if isinstance(target, ast.Name) and returned is not None and target.id not in self.namespace:
                        self.assigned[target.id] = returned  # a name the run did not bind (a check-only block)

    def returns(self, call: ast.Call) -> Optional[Any]:
        function = self.resolve(call.func)
        if isinstance(function, type):
            return function
        if inspect.isfunction(function):
            try:
                returned = typing.get_type_hints(function).get("return")
            except Exception:
                return None
            return returned if isinstance(returned, type) else None
        return None

    def resolve(self, node: ast.AST) -> Optional[Any]:
        if isinstance(node, ast.Name):
            for scope in (self.assigned, self.namespace, vars(builtins)):
                if node.id in scope:
                    return scope[node.id]
            return None
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            return None if base is None else getattr(base, node.attr, None)
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            base = self.resolve(node.value)
            return base.get(node.slice.value) if isinstance(base, dict) else None
        if isinstance(node, ast.Call):
            return self.returns(node)
        return None


def parameters(function: Any) -> Optional[Set[str]]:
    """Its parameter names, or None when any keyword goes (``**kwargs``) or there is no signature to read."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return None
    return set(signature.parameters)


def is_ours(obj: Any) -> bool:
    """A class or function of this package, Ignite or PyTorch (what a prose mention of ``name=`` may refer to)."""
    module = getattr(obj, "__module__", None) or ""
    return (inspect.isclass(obj) or inspect.isfunction(obj)) and module.split(".")[0] in ("ignite_igan", "ignite", "torch")


def check_calls(tree: ast.AST, resolver: Resolver, where: str, strict: bool) -> Tuple[Set[str], Set[str]]:
    """Checks every call's keywords against its callee's parameters. Returns (the parameter names of the callables
    found, the keywords of calls whose callee could not be found). With ``strict``, such a call fails."""
    known: Set[str] = set()
    unresolved: Set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        keywords = {k.arg for k in node.keywords if k.arg is not None}
        function = resolver.resolve(node.func)
        if function is None:
            if keywords and strict:
                pytest.fail(f"{where}: cannot tell what {ast.unparse(node.func)} is, to check {sorted(keywords)}")
            unresolved |= keywords
            continue
        names = parameters(function)
        if names is None:
            continue
        known |= names
        wrong = keywords - names
        assert not wrong, f"{where}: {ast.unparse(node.func)}() has no parameter {sorted(wrong)}"
    return known, unresolved


def test_keyword_arguments_in_the_guides_exist(runs):
    text = guides()
    namespaces = {ATTACH: runs.attach, METRICS: runs.attach, EXAMPLE: runs.example}
    checked = 0
    for heading in CHECKED_SECTIONS:
        resolver = Resolver(namespaces[heading])
        known_by_subsection: Dict[str, Set[str]] = {}
        # the snippets, run or check-only
        for index, block in enumerate(section_blocks(text, heading)):
            tree = ast.parse(block.code)
            resolver.learn(tree)
            known, _ = check_calls(tree, resolver, f"{heading} block {index}", strict=True)
            known_by_subsection.setdefault(block.subsection, set()).update(known)
            checked += 1
        # the inline code of the prose
        for subsection, prose in subsections(text, heading).items():
            known = set(known_by_subsection.get(subsection, set()))
            mentions: Set[str] = set()
            for span in inline_code(prose):
                for name in re.findall(r"\b([A-Za-z_]\w+)\b", span):  # the package's callables named in the prose
                    if is_ours(resolver.namespace.get(name)):
                        known |= parameters(resolver.namespace[name]) or set()
                try:
                    tree = ast.parse(span.strip(), mode="eval")
                except SyntaxError:
                    mentions |= set(KEYWORD_MENTION.findall(span))
                    continue
                if isinstance(tree.body, ast.Call) or any(isinstance(n, ast.Call) for n in ast.walk(tree)):
                    found, unresolved = check_calls(tree, resolver, f"{subsection}: `{span}`", strict=False)
                    known |= found
                    mentions |= unresolved
                else:
                    mentions |= set(KEYWORD_MENTION.findall(span))
            unknown = sorted(mentions - known)
            assert not unknown, f"{subsection}: the guides name arguments no callable of it has: {unknown}"
    assert checked >= 12


# ---------------------------------------------------------------------------------------------------------------
# Blocks that are checked, not run, still run as written where the reader has what they say they need
# ---------------------------------------------------------------------------------------------------------------
def free_names(code: str) -> Set[str]:
    """Names a block reads that it never binds itself (assignment, import, def, class, loop or comprehension)."""
    tree = ast.parse(code)
    bound, read = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (bound if isinstance(node.ctx, (ast.Store, ast.Del)) else read).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return read - bound - set(dir(builtins))


def test_blocks_that_are_not_run_say_what_they_need_and_name_nothing_undefined(runs):
    """A block the tests cannot run (it downloads weights or a data set) must say so in the page's visible text
    just above it, and every name it reads must be defined by the guide's earlier blocks or by itself."""
    text = guides()
    lines = text.splitlines()
    not_run = 0
    for index, line in enumerate(lines):
        if not line.startswith(CHECK_ONLY):
            continue
        not_run += 1
        above = "\n".join(lines[max(0, index - 6) : index])
        assert re.search(r"\bdownload", above, re.I), f"no word above the block at line {index + 1} on what it needs"
    assert not_run >= 2
    for heading, namespace in ((METRICS, runs.attach), (EXAMPLE, runs.example)):
        defined = set(namespace)
        for block in section_blocks(text, heading):
            undefined = free_names(block.code) - defined
            assert not undefined, f"{block.subsection}: a block reads names no earlier block defines: {undefined}"
            defined |= _bound_names(block.code)


def _bound_names(code: str) -> Set[str]:
    return {node.id for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Name)
            and isinstance(node.ctx, ast.Store)} | {
        (alias.asname or alias.name).split(".")[0] for node in ast.walk(ast.parse(code))
        if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
