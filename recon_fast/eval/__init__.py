"""Evaluation protocols of ReCon: classification accuracy (plain FPS) and test-time voting,
linear SVM on frozen features, zero-shot classification with CLIP prompts, few-shot folds."""

from recon_fast.eval.classification import accuracy, vote_accuracy
from recon_fast.eval.fewshot import summarize_folds
from recon_fast.eval.svm import extract_features, svm_accuracy
from recon_fast.eval.zeroshot import zero_shot_accuracy

__all__ = ["accuracy", "vote_accuracy", "extract_features", "svm_accuracy", "zero_shot_accuracy",
           "summarize_folds"]
