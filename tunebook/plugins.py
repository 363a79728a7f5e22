"""What a project's plugin file imports: the decorators that register its own rewards, answer extractors
and answer transforms by name, beside the built-ins (docs/plugins.md).

    # plugins/my_rewards.py, listed in the spec as `plugins: [plugins/my_rewards.py]`
    from tunebook.plugins import answer_transform, extractor, reward

    @reward("contains_answer")
    def contains_answer(completion, answer, extract):
        return 1.0 if answer.strip() in completion else 0.0

`tunebook compile` reads the names a plugin defines without running it; the stages that use them import it.
"""

from tunebook.runtime.extract import answer_transform, extractor
from tunebook.runtime.rewards import reward

__all__ = ["answer_transform", "extractor", "reward"]
