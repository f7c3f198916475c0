"""What a study is, before anything trains: the frozen `StudySpec` and `RunSpec` with their
stable run ids, study files and presets (`config`), a search's space, budget, sampler and
seeds (`search`), the datasets and their seeded, nested
subsets (`data`, `streams`), the models (`models`; timm and torchvision networks with the
study's activation: `zoo`), the activations with their parametric
spellings, safe expressions and a user's `module:attr` objects (`activations`,
`expressions`, `user_activations`, `userimport`, `definition`) and the names of what the
diagnostics record (`metrics`).

May import nothing of actconv's but `actconv.errors`: every other layer builds on this one.
"""
