"""The demo: generate the synthetic benchmark, pretrain the toy CLIP, fine-tune baseline and CALM,
evaluate in and out of domain, and write a report. It sits above `engine` and uses it like a user."""
