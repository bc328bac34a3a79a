"""`configs/mgtc_videomae.py`: the paper's protocol on a released VideoMAE ViT-B/16."""
import pytest

from configs import mgtc_videomae
from mgtc import task as mgtc_task


@pytest.mark.parametrize("dataset, data_name, num_classes, eval_split, layer_decay", [
    ("ucf101", "videos/ucf101_1", 101, "test", 0.7),
    ("hmdb51", "videos/hmdb51_1", 51, "test", 0.7),
    ("k400", "videos/kinetics400", 400, "validation", 0.75),
])
def test_each_dataset_gets_its_recipe_and_videomae_views(dataset, data_name, num_classes,
                                                         eval_split, layer_decay):
  config = mgtc_videomae.get_config(f"dataset={dataset}")
  assert config.data.name == data_name and config.data.eval_split == eval_split
  assert config.model.num_classes == num_classes
  assert tuple(config.data.eval_views) == (5, 3) and config.data.random_flip
  assert config.optimizer.layer_decay == layer_decay
  assert config.model.input_standardisation == "imagenet"
  assert tuple(config.init_from_prefixes) == ("patch_embed", "encoder")
  mgtc_task.make_task(config).validate_config(config)


@pytest.mark.parametrize("arg, gflops", [
    # docs/mgtc_reference.md §6 (encoder only; the head adds 0.3 MMACs and MGTC its score).
    ("frames=16", 180.3),
    ("frames=32", 451.3),
    ("frames=32,method=mgtc,ratio=0.25", 304.5),
    ("frames=32,method=random,ratio=0.5", 180.3),
])
def test_gflops_per_view_match_the_papers_accounting(arg, gflops):
  config = mgtc_videomae.get_config(arg)
  assert mgtc_task.gflops_per_view(config) == pytest.approx(gflops, rel=0.002)


def test_inference_only_loads_the_whole_classifier_and_drops_at_test_only():
  config = mgtc_videomae.get_config("dataset=k400,init=finetuned,method=mgtc,ratio=0.5,"
                                    "apply_at=test")
  assert tuple(config.init_from_prefixes) == ()
  assert config.selection.apply_at == "test"


@pytest.mark.parametrize("arg, match", [
    ("dataset=ssv2", "choose 'ucf101', 'hmdb51' or 'k400'"),
    ("frames=24", "choose from"),
    ("split=4", "choose 1, 2 or 3"),
    ("stage=pretrain", "pretrain with configs/mgtc_ucf101.py"),
    ("init=scratch", "choose 'pretrained' or 'finetuned'"),
])
def test_bad_arguments_say_what_to_choose(arg, match):
  with pytest.raises(ValueError, match=match):
    mgtc_videomae.get_config(arg)
