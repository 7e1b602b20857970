from importlib import resources

import pytest
import yaml

from eagle_cli.context import Context
from eagle_cli.errors import DataError, ParameterError
from eagle_cli.params import PromptParams
from eagle_cli.prompts.questions import default_question, from_mmad, parse_answer
from eagle_cli.prompts.templates import PARTS, Templates
from eagle_cli.stages.prompt import run_prompt

OPTIONS = {"A": "Yes", "B": "No"}


@pytest.mark.parametrize("reply,letter", [
    ("B", "B"), ("The answer is A.", "A"), ("A. Yes, but on reflection B", "B"), ("no", "B"),
    ("Yes", "A"), ("", None), ("E", None), ("zzzz qqq", None),
])
def test_answers_parse_like_mmad_and_garbage_is_invalid(reply, letter):
    assert parse_answer(reply, OPTIONS) == letter


def test_mmad_options_are_relettered_in_order():
    question = from_mmad({"Question": "Which defect?", "Answer": "C",
                          "Options": {"B": "scratch", "C": "crack", "D": "none"}, "type": "Defect Classification"}, "k")
    assert question.options == {"A": "scratch", "B": "crack", "C": "none"} and question.answer == "B"
    with pytest.raises(DataError, match="answer 'Z'"):
        from_mmad({"Question": "q", "Answer": "Z", "Options": {"A": "x"}}, "k")


def test_default_question_knows_the_answer_from_the_label():
    assert default_question(1).answer == "A" and default_question(0).answer == "B"
    assert default_question(None).answer is None


def test_shipped_template_renders_every_part():
    templates = Templates.load()
    text = templates.render("question", question="Is it broken?", options=[{"letter": "A", "text": "Yes"},
                                                                            {"letter": "B", "text": "No"}])
    assert text == "Is it broken?\nA. Yes\nB. No"  # one line each, as MMAD shows them
    assert "anomalous" in templates.render("verdict", verdict="anomalous")


def test_unknown_field_in_a_template_is_named_before_any_work(tmp_path):
    source = {part: "text" for part in PARTS}
    source["verdict"] = "The part is {{ verdit }}."
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(source))
    with pytest.raises(ParameterError, match=r"part 'verdict' uses field\(s\) \['verdit'\] that it is not given"):
        Templates.load(path)
    del source["verdict"]
    path.write_text(yaml.safe_dump(source))
    with pytest.raises(ParameterError, match=r"missing \['verdict'\]"):
        Templates.load(path)


@pytest.mark.parametrize("reach", ["{{ category.__class__.__mro__[1].__subclasses__() }}",
                                   "{{ (category|attr('__class__')).__init__.__globals__ }}",
                                   "{{ ''.__class__.__base__.__subclasses__() }}"])
def test_a_template_that_reaches_for_python_internals_stops_with_its_file_named(washer_scores, tmp_path, reach):
    source = yaml.safe_load(resources.files("eagle_cli.prompts").joinpath("templates", "default.yaml").read_text())
    source["query"] = f"Look at this {{{{ category }}}}. {reach}"
    path = tmp_path / "shared.yaml"
    path.write_text(yaml.safe_dump(source))
    context = Context(artifacts=tmp_path / "artifacts")
    with pytest.raises(ParameterError, match=r"Template .*shared.yaml, part 'query'.* is unsafe"):
        run_prompt(washer_scores, PromptParams(template=path), context=context)
    assert not list((tmp_path / "artifacts").rglob("manifest.json"))  # nothing published
